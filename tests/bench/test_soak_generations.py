"""The soak's verdict on runs (bench/soak.py ``Generations``) on hand-made sightings: an end
seen again with the same status is a repeat (allowed), two different ends a duplicate, a
status other than the record's a mismatch, an end nobody saw unpublished."""

from __future__ import annotations

from bench.soak import Generations


def _verdict(gens: Generations, resets: int = 0) -> dict[str, object]:
    return gens.verdict(lambda _user: resets)


def test_the_same_end_at_two_positions_is_a_repeat_not_a_failure() -> None:
    gens = Generations(created={"gen_a": "alice", "gen_b": "alice"}, records={"gen_a": "completed",
                                                                              "gen_b": "failed"})
    gens.seen("alice", "gen_a", "running", ("e1", 3))
    gens.seen("alice", "gen_a", "completed", ("e1", 4))
    gens.seen("alice", "gen_a", "completed", ("e1", 9))  # announced again by a sweep after a kill
    gens.seen("alice", "gen_b", "failed", ("e1", 5))
    gens.seen("alice", "gen_b", "failed", ("e1", 5))  # the same position on another connection
    figures = _verdict(gens)
    assert (figures["terminal_repeated"], figures["terminal_duplicated"], figures["terminal_mismatched"],
            figures["terminal_unpublished"], figures["generation_problems"]) == (1, 0, 0, 0, [])


def test_two_different_ends_are_a_duplicate_and_one_against_the_record_a_mismatch() -> None:
    gens = Generations(created={"gen_a": "alice", "gen_b": "bob"}, records={"gen_a": "completed",
                                                                            "gen_b": "completed"})
    gens.seen("alice", "gen_a", "completed", ("e1", 4))
    gens.seen("alice", "gen_a", "failed", ("e1", 6))
    gens.seen("bob", "gen_b", "cancelled", ("e2", 2))
    gens.seen("bob", "gen_b", "cancelled", ("e2", 3))
    figures = _verdict(gens)
    assert (figures["terminal_duplicated"], figures["terminal_repeated"]) == (1, 1)
    assert figures["terminal_mismatched"] == 2  # gen_a's `failed`, gen_b's `cancelled`


def test_an_end_nobody_saw_is_unpublished_unless_a_reset_may_have_covered_it() -> None:
    gens = Generations(created={"gen_a": "alice"}, records={"gen_a": "completed"})
    assert _verdict(gens)["terminal_unpublished"] == 1
    assert _verdict(gens, resets=1)["terminal_unpublished"] == 0


def test_a_run_whose_create_got_no_answer_is_adopted_from_its_updates_and_checked() -> None:
    """A create that timed out may still have made the run (the soak never learned its id):
    its updates name it, and it is then held to the same rules, its record included."""
    gens = Generations(records={"gen_a": "completed", "gen_x": "completed"})
    gens.seen("alice", "gen_a", "queued", ("e1", 1))  # its update came before its 202
    gens.created["gen_a"] = "alice"
    gens.seen("alice", "gen_a", "completed", ("e1", 2))
    gens.seen("bob", "gen_x", "queued", ("e2", 1))
    gens.seen("bob", "gen_x", "completed", ("e2", 3))
    figures = _verdict(gens)
    assert gens.named == {"gen_a": "alice", "gen_x": "bob"} and figures["generations_adopted"] == 1
    assert (figures["terminal_mismatched"], figures["generations_unfinished"], figures["generation_problems"]) == (
        0, 0, [])
    gens.records["gen_x"] = "running"  # its record never ended
    assert _verdict(gens)["generations_unfinished"] == 1
