"""The client's stream cursor (livegate.protocol.cursor), pure: the resume position and the
``timestamp`` of the event at it (asyncapi.yaml ``StreamPosition.timestamp``) — kept when the
position is an event the cursor received, absent when it was reached only through
``supersedes``, after a ``welcome`` reset, or for a position restored without one."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from livegate.protocol.cursor import StreamCursor
from livegate.protocol.outbox import Outbox, Outgoing


def stamp(offset: int) -> str:
    return f"2026-11-25T18:30:{offset // 1000:02d}.{offset % 1000:03d}Z"


def test_a_received_event_sets_the_timestamp_of_the_position() -> None:
    cursor = StreamCursor("e1", 3)
    assert cursor.timestamp is None  # a welcome's position: no event received there
    assert cursor.accept("e1", 4, timestamp=stamp(4))
    assert (cursor.offset, cursor.timestamp) == (4, stamp(4))
    assert not cursor.accept("e1", 4, timestamp="another")  # a duplicate changes nothing
    assert cursor.timestamp == stamp(4)


def test_an_offset_reached_only_through_supersedes_has_no_timestamp() -> None:
    cursor = StreamCursor("e1", 4, stamp(4))
    # The gap 5..6 is filled by offsets named in supersedes, not by events received there:
    assert cursor.accept("e1", 7, [5, 6], timestamp=stamp(7))
    assert (cursor.offset, cursor.timestamp) == (7, stamp(7))  # 7 itself was received
    # An event beyond a hole: the position does not move, nor does its timestamp.
    assert cursor.accept("e1", 10, timestamp=stamp(10))
    assert (cursor.offset, cursor.timestamp) == (7, stamp(7)) and cursor.pending_gap
    # A later event supersedes 8 and 9 but its own offset 12 is beyond 10 and 11: the
    # position ends on 10 (received), then 11 (only superseded, in a second conflation).
    assert cursor.accept("e1", 12, [8, 9], timestamp=stamp(12))
    assert (cursor.offset, cursor.timestamp) == (10, stamp(10))
    assert cursor.accept("e1", 13, [11], timestamp=stamp(13))
    assert (cursor.offset, cursor.timestamp) == (13, stamp(13))
    # The position ends on an offset that was only superseded: no event, no timestamp.
    assert cursor.accept("e1", 17, timestamp=stamp(17))  # beyond 14..16
    assert cursor.accept("e1", 20, [14, 15], timestamp=stamp(20))  # 16 still missing
    assert (cursor.offset, cursor.timestamp) == (15, None)


def test_a_received_offset_named_again_in_supersedes_keeps_its_timestamp() -> None:
    cursor = StreamCursor("e1", 4)
    assert cursor.accept("e1", 6, timestamp=stamp(6))  # beyond the hole at 5
    assert cursor.accept("e1", 9, [5, 6], timestamp=stamp(9))  # 7 and 8 still missing
    assert (cursor.offset, cursor.timestamp) == (6, stamp(6))


def test_a_welcome_reset_and_a_restored_position_without_one_have_no_timestamp() -> None:
    cursor = StreamCursor("e1", 0)
    assert cursor.accept("e1", 1, timestamp=stamp(1))
    cursor.reset("e2", 40)  # welcome.recovered false: its position names no received event
    assert (cursor.epoch, cursor.offset, cursor.timestamp) == ("e2", 40, None)
    assert not cursor.accept("e1", 41, timestamp=stamp(41))  # the old epoch is gone
    assert cursor.timestamp is None
    assert StreamCursor("e1", 7).timestamp is None  # stored before timestamps existed
    assert StreamCursor("e1", 7, stamp(7)).timestamp == stamp(7)


# -- property: fed by the real conflating outbox, in any interleaving, with replays ----------

publish = st.tuples(st.just("publish"), st.sampled_from(["progress:g1", "progress:g2", "progress:g3", "note"]))
step = st.one_of(
    publish, publish, publish,  # publishes outnumber deliveries: the reader falls behind, conflation runs
    st.tuples(st.just("deliver"), st.integers(1, 4)),
    # A resume replays the history after the position it sent, or a little before it (the
    # upgrade from SSE to a WebSocket: events both wires carried arrive twice).
    st.tuples(st.just("replay"), st.integers(0, 3)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=8, max_size=80))
# g1@1, g2@2, g1@3 (supersedes 1), g2@4 (supersedes 2): the first delivery fills offset 1 only
# through supersedes, with 2 missing: the position is an event the reader never received.
@example([("publish", "progress:g1"), ("publish", "progress:g2"), ("publish", "progress:g1"),
          ("publish", "progress:g2"), ("deliver", 1), ("replay", 0), ("deliver", 1)])
def test_the_timestamp_is_always_that_of_a_received_event_at_the_position(steps: list[tuple[str, object]]) -> None:
    """Invariant after every step: ``cursor.timestamp`` is the timestamp of the stream's event
    at ``cursor.offset`` when the cursor accepted that event, else ``None`` — for events
    delivered through the real conflation of a slow reader's queue (``supersedes``) and
    resume replays of the unconflated history (duplicates)."""
    history: list[str] = []  # history[o - 1]: the frame of offset o, as published
    outbox = Outbox(10**9)
    cursor = StreamCursor("e", 0)
    accepted: set[int] = set()

    def feed(frame: str) -> None:
        event = json.loads(frame)
        if cursor.accept(event["epoch"], event["offset"], event.get("supersedes", ()), timestamp=event["timestamp"]):
            accepted.add(event["offset"])

    for kind, arg in steps:
        if kind == "publish":
            offset = len(history) + 1
            what, _, gen = str(arg).partition(":")
            data = json.dumps({"timestamp": stamp(offset), "type": "generationProgress" if what == "progress"
                               else "notification", "epoch": "e", "offset": offset, "generationId": gen})
            history.append(data)
            outbox.push(Outgoing(data, offset=offset, conflation_key=gen if what == "progress" else None))
        elif kind == "deliver":
            for _ in range(int(str(arg))):
                item = outbox.pop()
                if item is not None:
                    feed(item.frame())
        else:
            for frame in history[max(0, cursor.offset - int(str(arg))):]:
                feed(frame)
        expected = stamp(cursor.offset) if cursor.offset in accepted else None
        assert cursor.timestamp == expected, (cursor.offset, sorted(accepted))
    for item in outbox.drain():
        feed(item.frame())
    assert cursor.offset == len(history) and not cursor.pending_gap  # nothing lost
    assert cursor.timestamp == (stamp(cursor.offset) if cursor.offset in accepted else None)
    if history:
        assert cursor.timestamp is not None  # the newest event is never superseded: received
