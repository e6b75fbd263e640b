"""``settings.stream_buffer_maxsize`` is the lane backlog: what a lane holds fetched before its partitions pause."""

from __future__ import annotations

from connectors.delivery.deliver import Deliverer
from streams.config import Settings
from streams.pipeline import STAGE_NAMES, build_stages
from streams.runtime.lane import Lane, default_backlog
from streams.runtime.worker import StageWorker


async def _nothing(msg: object) -> None:
    return None


def test_zero_means_twice_the_in_flight_window_and_at_least_one_consume_batch() -> None:
    assert Settings().stream_buffer_maxsize == 0
    assert Lane("a", ["t"], _nothing, max_in_flight=64, max_backlog=0).max_backlog == 500
    assert Lane("a", ["t"], _nothing, max_in_flight=400, max_backlog=0).max_backlog == 800 == default_backlog(400)
    assert Lane("a", ["t"], _nothing, max_in_flight=64, max_backlog=40).max_backlog == 40


def test_every_lane_of_a_worker_and_of_an_edge_takes_the_setting() -> None:
    settings = Settings(stream_buffer_maxsize=123, max_in_flight=8)
    worker = StageWorker(settings, build_stages(settings), consumer=object(), producer=object())
    lanes = worker.lanes()
    assert [lane.name for lane in lanes] == list(STAGE_NAMES)
    assert {lane.max_backlog for lane in lanes} == {123}
    assert Deliverer(settings, {}, None, None, None).lane().max_backlog == 123
    unset = StageWorker(Settings(max_in_flight=8), build_stages(Settings()), consumer=object(), producer=object())
    assert {lane.max_backlog for lane in unset.lanes()} == {default_backlog(8)}
