"""The generation state machine, as a table (asyncapi.yaml ``GenerationStatus``).

::

    queued  -> running | cancelled | failed
    running -> completed | failed | cancelled
    completed, failed, cancelled: final

Every accepted transition publishes a ``generationUpdate``; an illegal one raises
:class:`~livegate.errors.IllegalTransition` and changes nothing.
"""

from __future__ import annotations

from typing import Literal

from livegate.errors import IllegalTransition

Status = Literal["queued", "running", "completed", "failed", "cancelled"]

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
FINAL: frozenset[str] = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


def check_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"A {current} generation cannot become {target}")
