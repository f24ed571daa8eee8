"""Conflation policy of the outbound queue and resume planning (pure)."""

from __future__ import annotations

import json

from livegate.protocol.outbox import Outbox, Outgoing
from livegate.protocol.resume import Fresh, Replay, Reset, plan_resume


def progress(offset: int, gen: str = "g1") -> Outgoing:
    data = json.dumps({"type": "generationProgress", "epoch": "e", "offset": offset, "generationId": gen})
    return Outgoing(data, offset=offset, conflation_key=gen)


def update(offset: int, gen: str = "g1") -> Outgoing:
    return Outgoing(json.dumps({"type": "generationUpdate", "offset": offset, "generationId": gen}), offset=offset)


def drain(box: Outbox) -> list[dict]:
    out = []
    while (item := box.pop()) is not None:
        out.append(json.loads(item.frame()))
    return out


def test_fast_reader_sees_everything() -> None:
    box = Outbox(10_000)
    for o in range(1, 4):
        box.push(progress(o))
        assert [f["offset"] for f in drain(box)] == [o]
    assert box.conflated == 0


def test_queued_progress_is_conflated_latest_wins_with_supersedes() -> None:
    box = Outbox(10_000)
    box.push(progress(1))
    box.push(update(2))
    box.push(progress(3, "g2"))
    box.push(progress(4))
    box.push(progress(5))
    got = drain(box)
    assert [f["offset"] for f in got] == [2, 3, 5]
    assert got[2]["supersedes"] == [1, 4]
    assert "supersedes" not in got[0] and "supersedes" not in got[1]
    assert box.conflated == 2 and box.bytes == 0


def test_updates_and_notifications_are_never_dropped_and_overflow_is_reported() -> None:
    box = Outbox(300)
    results = [box.push(update(o)) for o in range(1, 10)]
    assert results[0] is True and results[-1] is False
    assert [f["offset"] for f in drain(box)] == list(range(1, 10))


def test_every_offset_is_accounted_for_after_conflation() -> None:
    box = Outbox(1_000_000)
    for o in range(1, 200):
        box.push(progress(o, f"g{o % 3}") if o % 7 else update(o))
    seen: set[int] = set()
    for frame in drain(box):
        seen.add(frame["offset"])
        seen.update(frame.get("supersedes", []))
    assert seen == set(range(1, 200))


def test_resume_plans() -> None:
    assert plan_resume(None, None, epoch="e", first_available=1, top=0) == Fresh()
    assert plan_resume("e", 5, epoch="e", first_available=3, top=9) == Replay(after=5)
    assert plan_resume("e", 2, epoch="e", first_available=3, top=9) == Replay(after=2)  # 3.. all kept
    assert plan_resume("e", 9, epoch="e", first_available=10, top=9) == Replay(after=9)  # nothing to replay
    assert isinstance(plan_resume("e", 1, epoch="e", first_available=3, top=9), Reset)  # 2 evicted
    assert isinstance(plan_resume("old", 5, epoch="e", first_available=1, top=9), Reset)
    assert isinstance(plan_resume("e", 10, epoch="e", first_available=1, top=9), Reset)
