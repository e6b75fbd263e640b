"""Imports point down: processors never import streams, stack never imports the CLI, no cycles.

Checked on the source (every import statement, also those inside functions and under
TYPE_CHECKING), so a lazy import cannot hide a dependency that points the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def modules(*packages: str) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def test_processors_never_import_streams() -> None:
    wrong = {
        name: sorted(i for i in imports_of(path) if i == "streams" or i.startswith("streams."))
        for name, path in modules("processors").items()
    }
    assert not {k: v for k, v in wrong.items() if v}, "processors/ must not import streams/ (pass values in)"


def test_stack_never_imports_the_cli() -> None:
    wrong = {
        name: sorted(i for i in imports_of(path) if i == "streams.cli" or i.startswith("streams.cli."))
        for name, path in modules("stack").items()
    }
    assert not {k: v for k, v in wrong.items() if v}


def test_no_import_cycles_in_processors_stack_and_the_runtime() -> None:
    mods = modules("processors", "stack", "streams/runtime")
    graph = {name: {i for i in imports_of(path) if i in mods and i != name} for name, path in mods.items()}
    # a package's __init__ is imported with its modules: do not count "pkg.mod -> pkg" as a cycle edge
    for name, deps in graph.items():
        deps.difference_update({d for d in deps if name.startswith(d + ".")})
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]) if dep in trail else f"{node} -> {dep}")
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_rules_see_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from streams.config import secret\n    import stack.build\n    return secret\n")
    assert {"streams.config", "streams.config.secret", "stack.build"} <= imports_of(module)
