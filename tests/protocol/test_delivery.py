"""The delivery core (protocol/delivery.py) with a clock passed in: resume seam, offset
filter, replay, write-now-or-queue, conflation and the slow-consumer bound."""

from __future__ import annotations

from livegate.bus.base import StreamEvent
from livegate.protocol.delivery import DROPPED, HELD, OVERFLOW, QUEUED, WRITE, Delivery, Replay


class Clock:
    def __init__(self) -> None:
        self.tick = 0

    def __call__(self) -> int:
        return self.tick


def ev(offset: int, size: int = 10, key: str | None = None) -> StreamEvent:
    return StreamEvent(offset, '{"o":' + str(offset) + "," + "x" * size + "}", key, 1.0)


def drain(d: Delivery) -> list[str]:
    out = []
    while (item := d.next_item()) is not None:
        out.append(item[0])
    return out


def test_writes_at_once_when_nothing_is_queued_and_the_wire_is_writable() -> None:
    d, clock = Delivery(1000), Clock()
    assert d.offer(ev(1), clock, True) == WRITE and d.last_sent == 1
    assert d.offer(ev(2), clock, False) == QUEUED  # not writable: queued
    assert d.offer(ev(3), clock, True) == QUEUED  # something queued: behind it, in order
    assert [t[:6] for t in drain(d)] == ['{"o":2', '{"o":3'] and d.last_sent == 3


def test_duplicates_and_old_offsets_are_dropped() -> None:
    d, clock = Delivery(1000), Clock()
    assert d.offer(ev(1), clock, True) == WRITE
    assert d.offer(ev(1), clock, True) == DROPPED
    d.close(flush=True)
    assert d.offer(ev(2), clock, True) == DROPPED


def test_progress_is_always_queued_and_conflates() -> None:
    d, clock = Delivery(10_000), Clock()
    for offset in range(1, 6):
        assert d.offer(ev(offset, key="g"), clock, True) == QUEUED
    (frame,) = drain(d)
    assert frame.startswith('{"supersedes":[1,2,3,4],"o":5')


def test_a_burst_over_the_bound_in_one_tick_overflows_and_the_next_tick_starts_afresh() -> None:
    d, clock = Delivery(100), Clock()
    written = [d.offer(ev(o, size=30), clock, True) for o in range(1, 4)]
    # The third would take this tick's burst over the bound: queued, and queue + burst overflow.
    assert written == [WRITE, WRITE, OVERFLOW]
    d2 = Delivery(100)
    for o in range(1, 10):
        clock.tick += 1
        assert d2.offer(ev(o, size=30), clock, True) == WRITE  # drained between ticks: never over


def test_resume_seam_holds_live_events_and_releases_only_those_after_the_read() -> None:
    d, clock = Delivery(10_000), Clock()
    d.hold()
    assert d.offer(ev(5), clock, True) == HELD and d.offer(ev(6), clock, True) == HELD
    plan = d.start("e", 3, epoch="e", first_available=1, top=5)
    assert plan == Replay(after=3)
    assert d.offer_control('{"type":"welcome"}', clock, True) == WRITE
    held = d.go_live(plan, [ev(4), ev(5)])
    assert [d.offer(e, clock, True) for e in held] == [DROPPED, QUEUED]  # 5 was in the read; 6 after the replay
    assert [t[:6] for t in drain(d)] == ['{"o":4', '{"o":5', '{"o":6']
    assert d.replayed == 2 and d.idle


def test_a_reset_replays_nothing() -> None:
    d = Delivery(10_000)
    d.hold()
    plan = d.start("old", 3, epoch="new", first_available=1, top=5)
    assert d.go_live(plan, [ev(4), ev(5)]) == [] and d.idle and d.last_sent == 5


def test_close_without_flush_drops_the_queue_but_control_frames_still_go() -> None:
    d, clock = Delivery(10_000), Clock()
    d.offer(ev(1), clock, False)
    d.close(flush=False)
    assert d.idle
    assert d.offer_control('{"type":"error"}', clock, False) == QUEUED
    assert drain(d) == ['{"type":"error"}']


def _joined_with_a_paged_replay(top: int = 10) -> Delivery:
    """Resumed at 2 with the stream at ``top``: the join read brought the page 3..5."""
    d = Delivery(10_000)
    d.hold()
    plan = d.start("e", 2, epoch="e", first_available=1, top=top)
    assert plan == Replay(after=2)
    d.go_live(plan, [ev(3), ev(4), ev(5)])
    return d


def test_a_paged_replay_asks_for_each_page_once_it_is_on_the_wire() -> None:
    d, clock = _joined_with_a_paged_replay(), Clock()
    assert [t[:6] for t in drain(d)] == ['{"o":3', '{"o":4', '{"o":5']
    assert not d.idle and d.take_page_request() == 5
    assert d.take_page_request() is None and d.next_item() is None  # asked once, read in flight
    assert d.add_page("e", [ev(6), ev(7), ev(8)])
    assert d.offer(ev(11), clock, True) == QUEUED  # a live event waits behind the whole replay
    assert [t[:6] for t in drain(d)] == ['{"o":6', '{"o":7', '{"o":8'] and d.take_page_request() == 8
    assert d.add_page("e", [ev(9), ev(10), ev(11)])  # a page past the read's top: cut at the top
    assert [t[:7] for t in drain(d)] == ['{"o":9,', '{"o":10', '{"o":11']
    assert d.idle and d.replayed == 8 and d.take_page_request() is None
    assert d.offer(ev(12), clock, True) == WRITE  # the replay is over: live again


def test_a_page_that_does_not_go_on_where_the_replay_is_ends_it_keeping_control_frames() -> None:
    for epoch, page in (("e", [ev(7), ev(8)]), ("other", [ev(6)]), ("e", [])):
        d, clock = _joined_with_a_paged_replay(), Clock()
        drain(d)
        assert d.offer(ev(11), clock, True) == QUEUED
        assert d.offer_control('{"type":"pong"}', clock, True) == QUEUED
        assert d.take_page_request() == 5
        assert d.add_page(epoch, page) is False
        # Nothing after 5 reaches the wire (the live 11 would hide a gap); the pong does.
        assert drain(d) == ['{"type":"pong"}'] and d.last_sent == 5 and d.closing


def test_closing_during_a_paged_replay_flushes_control_frames_only() -> None:
    d, clock = _joined_with_a_paged_replay(), Clock()
    assert d.next_item() is not None  # 3 is on the wire
    assert d.offer(ev(11), clock, True) == QUEUED
    d.close(flush=True)
    assert d.offer_control('{"type":"error"}', clock, True) == WRITE
    assert drain(d) == [] and d.idle and d.take_page_request() is None and d.last_sent == 3
