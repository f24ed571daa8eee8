"""What only the embedded bus does: its memory use per stream (the conformance suite covers
the behaviour every bus shares)."""

from __future__ import annotations

from livegate.bus.base import PublishItem
from livegate.bus.memory import MemoryBus

from ._support import FakeClock


async def test_a_stream_holds_no_history_deque_until_its_first_event_and_after_it_aged_out() -> None:
    clock = FakeClock()
    bus = MemoryBus(max_events=10, max_age_seconds=60.0, clock=clock)
    read = await bus.read("alice", None)
    assert bus._streams["alice"].history is None  # a connected user without events: no deque
    (first,) = await bus.publish([PublishItem("alice", b'{"n":1}')])
    assert first.offset == 1 and len(bus._streams["alice"].history or ()) == 1
    clock.advance(61.0)
    bus.sweep()
    assert bus._streams["alice"].history is None  # everything aged out: the deque is given back
    after = await bus.read("alice", 0)
    assert (after.epoch, after.top, after.first_available, after.events) == (read.epoch, 1, 2, [])
    (second,) = await bus.publish([PublishItem("alice", b'{"n":2}')])
    assert (second.epoch, second.offset) == (read.epoch, 2)
    assert [e.offset for e in (await bus.read("alice", 1)).events] == [2]
