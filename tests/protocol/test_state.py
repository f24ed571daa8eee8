"""The transition table: the only state changes allowed, and the diagram made from it."""

from __future__ import annotations

import pytest

from livegate.protocol.state import ALLOWED, TRANSITIONS, IllegalTransition, State, advance, mermaid


def test_an_illegal_change_raises_and_leaves_the_state_to_the_caller() -> None:
    state = State.AWAITING_AUTH
    with pytest.raises(IllegalTransition):
        state = advance(state, State.OPEN)  # a welcome before auth
    assert state is State.AWAITING_AUTH
    with pytest.raises(IllegalTransition):
        advance(State.CLOSED, State.OPEN)
    assert advance(State.AUTHENTICATING, State.OPEN) is State.OPEN


def test_closed_is_terminal_and_every_state_can_close() -> None:
    assert not any(source is State.CLOSED for source, _ in ALLOWED)
    assert {source for source, target in ALLOWED if target is State.CLOSED} == set(State) - {State.CLOSED}


def test_the_diagram_has_one_edge_per_row_and_source() -> None:
    edges = [line for line in mermaid().splitlines() if "-->" in line and "[*]" not in line]
    assert len(edges) == sum(len(t.sources) for t in TRANSITIONS)
