"""``chatstream ingest`` progress: plain periodic lines when stdout is not a terminal."""

from __future__ import annotations

import io

from tests.processors.fakes_retrieval import HashEmbedder, MemoryStore

from processors.ingest import IngestProgress, ingest
from streams.commands.ingest_progress import PlainProgress, RichProgress, format_duration, progress_for


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_plain_lines_and_a_terminal_gets_a_bar():
    assert isinstance(progress_for(io.StringIO()), PlainProgress)
    assert isinstance(progress_for(FakeTerminal()), RichProgress)


def test_plain_lines_carry_chunks_rate_and_eta():
    out = io.StringIO()
    show = PlainProgress(out, every_s=0)
    show(IngestProgress("wiki", documents=100, chunks=8000, to_embed=6000, embedded=1500, elapsed_s=62.0,
                        embed_started_s=2.0))
    line = out.getvalue().strip()
    assert line == ("ingest wiki: 1500/6000 chunks embedded (25%), 25.0 chunks/s, ETA 3m00s; "
                    "100 documents, 8000 chunks, 2000 already stored")
    assert format_duration(3725) == "1h02m" and format_duration(None) == "?" and format_duration(9.6) == "10s"


async def test_a_real_ingest_prints_periodic_lines_not_a_bar(tmp_path):
    for i in range(30):
        (tmp_path / f"d{i}.md").write_text(f"# Doc {i}\n\nsome words about item {i} " * 3)
    out = io.StringIO()
    show = progress_for(out, every_s=0)
    await ingest(tmp_path, MemoryStore(), HashEmbedder(), "t1", batch_size=8, embed_batch_size=4, progress=show)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("ingest t1: 0/30 chunks embedded (0%)")
    assert lines[-1].startswith("ingest t1: 30/30 chunks embedded (100%)") and "ETA 0s" in lines[-1]
    assert show.last is not None and show.last.embedded == 30


def test_lines_are_throttled_but_the_last_one_always_shows():
    out = io.StringIO()
    show = PlainProgress(out, every_s=3600)
    for done in (0, 10, 20, 30):
        show(IngestProgress("t", 1, 30, 30, embedded=done, elapsed_s=1.0 + done))
    assert [line.split(":")[1].split()[0] for line in out.getvalue().splitlines()] == ["0/30", "30/30"]


def test_the_eta_follows_characters_because_short_chunks_go_first():
    p = IngestProgress("t", 10, 100, 100, embedded=50, elapsed_s=10.0, chars_total=10_000, chars_embedded=2_000)
    assert p.rate == 5.0 and p.eta_s == 40.0  # 8,000 characters left at 200 per second, not 50 chunks at 5/s


def test_a_terminal_gets_a_bar_with_the_same_figures():
    out = FakeTerminal()
    bar = progress_for(out)
    for done in (0, 40, 100):
        bar(IngestProgress("wiki", 10, 100, 100, embedded=done, elapsed_s=1.0 + done / 10))
    bar.close()
    text = out.getvalue()
    assert "ingest wiki" in text and "100/100" in text and "chunks" in text and "10 docs" in text
