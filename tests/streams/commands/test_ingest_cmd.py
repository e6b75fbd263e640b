"""``chatstream ingest``: the command end to end, and its operator-facing errors."""

from __future__ import annotations

import uuid

import pytest

from stack.ports import free_port
from streams.cli import main




def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_bad_tenant_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a.md").write_text("# A\n\nalpha")
    assert main(["ingest", str(tmp_path), "--tenant", "no spaces allowed"]) == 2
    assert "tenant 'no spaces allowed'" in capsys.readouterr().err


def test_weaviate_down_says_what_to_do(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.md").write_text("# A\n\nalpha")
    monkeypatch.setenv("CHATSTREAM_WEAVIATE_HTTP_PORT", str(free_port()))
    monkeypatch.setenv("CHATSTREAM_WEAVIATE_GRPC_PORT", str(free_port()))
    assert main(["ingest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "chatstream stack up" in err


@pytest.mark.stack
def test_ingest_sample_twice(capsys, monkeypatch):
    from processors.vectorstore import build_store
    from streams.config import Settings

    monkeypatch.setenv("CHATSTREAM_COLLECTION", "ChatstreamTest")
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    try:
        assert main(["ingest", "sample", "--tenant", tenant]) == 0
        first = capsys.readouterr().out
        assert f"tenant {tenant}: " in first and " 0 updated, 0 unchanged, 0 deleted" in first
        assert main(["ingest", "sample", "--tenant", tenant]) == 0
        second = capsys.readouterr().out
        assert "0 added, 0 updated" in second and "0 deleted" in second
    finally:
        import asyncio

        async def drop():
            store = build_store(Settings().derive(collection="ChatstreamTest"))
            await store.drop_tenant(tenant)
            await store.close()

        asyncio.run(drop())
