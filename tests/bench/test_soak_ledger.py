"""The soak's ledger (bench/soak_ledger.py) on hand-made histories: each rule of its docstring."""

from __future__ import annotations

from bench.soak_ledger import PROGRESS, Ledger

NOTE = "notification"


def _publish(ledger: Ledger, user: str, epoch: str, offsets: range, *, prefix: str = "e") -> None:
    for o in offsets:
        ledger.will_publish(f"{prefix}{o}", user, NOTE)
        ledger.acknowledged(f"{prefix}{o}", epoch, o)


def test_every_event_once_on_every_connection_passes() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 6))
    for name in ("a", "b"):
        conn = ledger.connection("u", name)
        conn.welcome("E", 0, None)
        for o in range(1, 6):
            conn.event("E", o, f"e{o}", NOTE)
    v = ledger.verdict({"u": ("E", 5)})
    assert v.ok and v.published == 5 and v.delivered == 10 and v.expected == 10, v


def test_joining_late_owes_nothing_before_the_welcome_and_a_resume_continues() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 9))
    conn = ledger.connection("u", "a")
    conn.welcome("E", 3, None)
    conn.event("E", 4, "e4", NOTE)
    conn.welcome("E", 4, True)  # reconnected, resumed exactly
    for o in range(5, 9):
        conn.event("E", o, f"e{o}", NOTE)
    v = ledger.verdict({"u": ("E", 8)})
    assert v.ok and v.resets == 0 and v.expected == 5, v


def test_a_missing_offset_in_the_last_segment_is_lost() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 4))
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.event("E", 1, "e1", NOTE)
    conn.event("E", 3, "e3", NOTE)
    v = ledger.verdict({"u": ("E", 3)})
    assert not v.ok and v.lost == 1 and "2 (e2)" in v.problems[0], v


def test_same_offset_or_same_event_id_yielded_twice_is_a_duplicate() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 3))
    ledger.will_publish("x", "u", NOTE)
    ledger.unknown("x")
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.event("E", 1, "e1", NOTE)
    conn.event("E", 1, "e1", NOTE)  # same offset again
    conn.event("E", 2, "e2", NOTE)
    conn.event("E", 3, "x", NOTE)
    conn.event("E", 4, "x", NOTE)  # appended twice
    v = ledger.verdict({"u": ("E", 4)})
    assert v.duplicated == 2 and v.lost == 0 and not v.ok, v


def test_frames_the_client_dropped_by_offset_are_not_duplicates() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 2))
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.raw("E", 1, NOTE)
    conn.raw("E", 1, NOTE)
    conn.event("E", 1, "e1", NOTE)
    v = ledger.verdict({"u": ("E", 1)})
    assert v.ok and v.raw_duplicates_dropped == 1, v


def test_a_reset_announces_the_gap_and_rebases_at_the_new_position() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 10))
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    for o in (1, 2, 3, 5):  # 4 missing, 5 ahead: the position is 3
        conn.event("E", o, f"e{o}", NOTE)
    conn.welcome("E", 7, False)
    conn.event("E", 8, "e8", NOTE)
    conn.event("E", 9, "e9", NOTE)
    v = ledger.verdict({"u": ("E", 9)})
    assert v.ok and v.resets == 1 and v.announced_lost == 4 and v.expected == 2, v


def test_a_new_epoch_announces_the_rest_of_the_old_one() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 6))
    _publish(ledger, "u", "F", range(1, 3), prefix="f")
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.event("E", 1, "e1", NOTE)
    conn.welcome("F", 0, False)
    conn.event("F", 1, "f1", NOTE)
    conn.event("F", 2, "f2", NOTE)
    stale = ledger.connection("u", "b")  # never told about F
    stale.welcome("E", 5, None)
    v = ledger.verdict({"u": ("F", 2)})
    assert v.announced_lost == 4 and v.lost == 2 and "still on epoch E" in v.problems[0], v


def test_a_recovered_welcome_on_another_epoch_is_a_mismatch() -> None:
    ledger = Ledger()
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.welcome("F", 0, True)
    v = ledger.verdict({"u": ("F", 0)})
    assert v.mismatched == 1 and not v.ok, v


def _progress(ledger: Ledger, user: str, epoch: str, offset: int, generation: str) -> None:
    ledger.will_publish(f"p{offset}", user, PROGRESS, generation)
    ledger.acknowledged(f"p{offset}", epoch, offset)


def test_supersedes_accounts_for_conflated_progress_of_the_same_generation_only() -> None:
    ledger = Ledger()
    for o in (1, 2, 3):
        _progress(ledger, "u", "E", o, "g")
    _progress(ledger, "u", "E", 4, "h")
    _progress(ledger, "u", "E", 5, "h")
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.event("E", 3, "p3", PROGRESS, "g", supersedes=[1, 2])
    conn.event("E", 5, "p5", PROGRESS, "h", supersedes=[4])
    v = ledger.verdict({"u": ("E", 5)})
    assert v.ok and v.conflated == 3 and v.delivered == 2, v

    bad = Ledger()
    _progress(bad, "u", "E", 1, "g")
    _progress(bad, "u", "E", 2, "h")
    conn = bad.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.event("E", 2, "p2", PROGRESS, "h", supersedes=[1])
    assert bad.verdict({"u": ("E", 2)}).mismatched == 1


def test_a_progress_the_client_skipped_behind_a_newer_one_is_conflated_not_lost() -> None:
    ledger = Ledger()
    for o in (1, 2, 3):
        _progress(ledger, "u", "E", o, "g")
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.raw("E", 3, PROGRESS, "g")
    conn.event("E", 3, "p3", PROGRESS, "g", supersedes=[2])
    conn.raw("E", 1, PROGRESS, "g")  # replayed later; the client had a newer progress of g
    v = ledger.verdict({"u": ("E", 3)})
    assert v.ok and v.conflated == 2, v


def test_unknown_outcomes_may_be_absent_but_once_in_the_stream_every_connection_owes_them() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 2))
    ledger.will_publish("x", "u", NOTE)
    ledger.unknown("x")  # appended at offset 2
    ledger.will_publish("y", "u", NOTE)
    ledger.unknown("y")  # never appended
    a = ledger.connection("u", "a")
    a.welcome("E", 0, None)
    a.event("E", 1, "e1", NOTE)
    a.event("E", 2, "x", NOTE)
    v = ledger.verdict({"u": ("E", 2)})
    assert v.ok and v.unknown == 2 and v.unknown_appended == 1, v

    b = ledger.connection("u", "b")
    b.welcome("E", 0, None)
    b.event("E", 1, "e1", NOTE)
    v = ledger.verdict({"u": ("E", 2)})
    assert v.lost == 1 and "2 (x)" in v.problems[0], v


def test_phantoms_and_offsets_carrying_another_event_are_mismatches() -> None:
    ledger = Ledger()
    _publish(ledger, "u", "E", range(1, 3))
    ledger.will_publish("r", "u", NOTE)
    ledger.refused("r")
    conn = ledger.connection("u", "a")
    conn.welcome("E", 0, None)
    conn.event("E", 1, "e2", NOTE)  # offset 1 is e1's
    conn.event("E", 2, "r", NOTE)  # never sent
    v = ledger.verdict({"u": ("E", 2)})
    assert v.mismatched == 2 and not v.ok, v

    double = Ledger()
    double.will_publish("a", "u", NOTE)
    double.will_publish("b", "u", NOTE)
    double.acknowledged("a", "E", 1)
    double.acknowledged("b", "E", 1)  # a rewound stream reusing offset 1
    assert double.verdict({}).mismatched == 1
