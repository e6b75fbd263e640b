import pytest
from connector_fakes import fake_producer, recorder_factory, serve, slack_fake  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def kafka_namespaces():
    """Delete the per-test topic namespaces a stack test created (unit tests create none)."""
    yield
    from stack_helpers import _created, delete_created_topics

    if _created:
        delete_created_topics()
