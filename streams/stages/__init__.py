"""The four pipeline stages, each a thin adapter from a topic to one processor."""

from __future__ import annotations

from streams.config import Settings
from streams.stage import Stage

STAGE_NAMES = ("enrich", "retrieve", "generate", "validate")


def build_stages(settings: Settings, names: list[str] | tuple[str, ...] = STAGE_NAMES) -> list[Stage]:
    from streams.stages.enrich import EnrichStage
    from streams.stages.generate import GenerateStage
    from streams.stages.retrieve import RetrieveStage
    from streams.stages.validate import ValidateStage

    classes = {"enrich": EnrichStage, "retrieve": RetrieveStage, "generate": GenerateStage, "validate": ValidateStage}
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGE_NAMES)}")
    return [classes[n](settings) for n in names]
