"""The generation state machine is a table; its docstring, the contract and the table agree."""

from __future__ import annotations

import itertools
import re

import pytest

from livegate.errors import IllegalTransition
from livegate.service import lifecycle
from livegate.service.lifecycle import FINAL, TRANSITIONS, check_transition
from livegate.testing.spec_validation import asyncapi_document

LEGAL = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}


def test_states_are_the_contracts_generation_status() -> None:
    enum = asyncapi_document()["components"]["schemas"]["GenerationStatus"]["enum"]
    assert list(TRANSITIONS) == enum
    assert {"completed", "failed", "cancelled"} == FINAL


def test_the_docstring_diagram_is_the_table() -> None:
    drawn: set[tuple[str, str]] = set()
    for line in (lifecycle.__doc__ or "").splitlines():
        match = re.fullmatch(r"\s*(\w+)\s+->\s+([\w |]+)", line)
        if match:
            drawn |= {(match.group(1), b.strip()) for b in match.group(2).split("|")}
    assert drawn == LEGAL


@pytest.mark.parametrize(("current", "target"), sorted(itertools.product(TRANSITIONS, repeat=2)))
def test_every_pair_is_accepted_or_refused_as_the_table_says(current: str, target: str) -> None:
    if (current, target) in LEGAL:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition, match=f"A {current} generation cannot become {target}"):
            check_transition(current, target)


def test_final_states_lead_nowhere_and_running_is_reached_only_from_queued() -> None:
    assert all(not TRANSITIONS[s] for s in FINAL)
    assert {a for a, b in LEGAL if b == "running"} == {"queued"}
    assert {a for a, b in LEGAL if b == "completed"} == {"running"}
    with pytest.raises(IllegalTransition):
        check_transition("nonsense", "running")
