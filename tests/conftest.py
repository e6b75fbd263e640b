"""Fixtures shared by every test package.

Tests marked ``@pytest.mark.stack`` talk to the real local services. They get ``stack_ready``
automatically: one readiness round trip per service, once per session, so a stack that is not up
fails those tests at once with the command that fixes it, instead of as a pile of timeouts.
"""

from __future__ import annotations

import pytest

from streams.config import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The effective settings (``CHATSTREAM_*`` environment), as every process of the project sees them."""
    return Settings()


@pytest.fixture(scope="session")
def stack_ready() -> Settings:
    """Fail clearly unless Kafka, Redis, Weaviate and Jaeger answer (whoever started them).

    It builds its own Settings rather than using the ``settings`` fixture, which test packages may
    override at a narrower scope (a session fixture cannot depend on those).
    """
    from stack.manager import Stack
    from stack.service import NotReady

    settings = Settings()
    down = []
    for service in Stack(settings, out=lambda _line: None).services:
        try:
            service.probe()
        except NotReady as exc:
            down.append(f"{service.title} ({service.describe_endpoints()}): {exc}")
    if down:
        pytest.fail(
            "the local stack is not up:\n  " + "\n  ".join(down)
            + "\nStart it with `chatstream stack up` (or run `make test`, which does everything).",
            pytrace=False,
        )
    return settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("stack") and "stack_ready" not in getattr(item, "fixturenames", ()):
            item.fixturenames.insert(0, "stack_ready")
