"""The generation store's contract: row types and the :class:`Store` interface.

One implementation (:class:`livegate.store.sql.SqlStore`) serves SQLite and PostgreSQL;
``tests/store/test_store_conformance.py`` is the executable form of this file and runs
against both. Every process of a product shares one store, so anything two processes may
race on is decided by the database, in one statement or one locked transaction:

* ``transition`` is one conditional ``UPDATE ... WHERE id = ? AND status IN (...)``:
  of any number of concurrent callers exactly one gets the row back, the others ``None``.
* ``claim_dispatchable`` runs under a database-wide lock (PostgreSQL advisory lock,
  SQLite ``BEGIN IMMEDIATE``), so concurrent claimers never exceed the limits together.

Errors: :class:`~livegate.errors.StoreUnavailable` when the database cannot be reached
(every method), :class:`~livegate.errors.OutputTooLarge` from ``write_output``.
Timestamps are Unix seconds (floats) throughout.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "CHUNK_SIZE",
    "FINAL_STATUSES",
    "UNFINISHED_STATUSES",
    "DeliveryRow",
    "GenerationRow",
    "OutputRow",
    "Store",
    "decode_cursor",
    "encode_cursor",
]

CHUNK_SIZE = 256 * 1024
"""Bytes per ``output_chunks`` row. Every process of a product must use the same value:
a range read finds its chunks by ``offset // CHUNK_SIZE``."""

UNFINISHED_STATUSES = frozenset({"queued", "running"})
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass
class GenerationRow:
    """One generation (a run of a tool). ``inputs``, ``output_ids`` and ``error`` are JSON.

    The job-engine columns (revision 2): ``dispatched_at`` a run slot was claimed
    (``claim_dispatchable``), ``job_id`` the engine's id, ``attempt`` how many times it was
    started, ``request_sent_at`` a non-idempotent upstream request went out (a takeover
    must not resend it), ``cancel_requested_at`` a cancel was asked for (any process),
    ``owner`` the process that runs it now; ``progress`` (revision 4) the latest progress
    snapshot (``{fraction, step?, totalSteps?, message?, partialText?}``: the streamed text so
    far, for late joiners), saved about once a second (JSON: no migration for the new key).
    Revision 0006: ``deadline_at`` when the run is cancelled with ``deadline_exceeded`` if
    it has not ended; ``queue_position`` the last position published for it (``None``: none).
    Revision 0007: ``announced_at`` when the run's terminal ``generationUpdate`` was published
    (``None`` for a final row: its end may not have been announced yet, see
    :meth:`Store.claim_unannounced`; its lease column is the store's own business).
    """

    id: str
    user_id: str
    tool_id: str
    status: str
    inputs: dict[str, Any]
    output_ids: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    upstream_ref: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    dispatched_at: float | None = None
    job_id: str | None = None
    attempt: int = 0
    request_sent_at: float | None = None
    cancel_requested_at: float | None = None
    owner: str | None = None
    progress: dict[str, Any] | None = None  # revision 4: the latest snapshot, while running
    webhook_url: str | None = None  # revision 0005: the generation's own webhook endpoint
    webhook_events: list[str] | None = None  # the statuses sent to it
    deadline_at: float | None = None  # revision 0006
    queue_position: int | None = None  # revision 0006
    announced_at: float | None = None  # revision 0007


@dataclass
class DeliveryRow:
    """One webhook delivery: a lifecycle ``event`` (status) of a generation to one
    ``endpoint``; ``id`` is its ``webhook-id``. ``status`` is ``pending`` (due at
    ``next_attempt_at``; ``lease_*`` while a process makes an attempt), ``delivered`` or
    ``failed`` (permanent)."""

    id: str
    generation_id: str
    event: str
    endpoint: str
    created_at: float
    status: str = "pending"
    url: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    lease_until: float | None = None
    lease_owner: str | None = None
    last_attempt_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


@dataclass
class OutputRow:
    """One stored output's metadata; its bytes are in ``output_chunks``."""

    id: str
    user_id: str
    generation_id: str
    kind: str
    media_type: str
    size_bytes: int
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    text: str | None = None
    created_at: float = 0.0


GENERATION_FIELDS = frozenset(GenerationRow.__dataclass_fields__)
"""Names ``update`` and ``transition`` accept as keyword fields (``id`` excepted)."""


def encode_cursor(row: GenerationRow) -> str:
    """The opaque ``nextCursor`` after ``row`` (its keyset position ``(created_at, id)``)."""
    return base64.urlsafe_b64encode(json.dumps([row.created_at, row.id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raise ``ValueError`` on anything that is not one of our cursors."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created_at, gen_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(created_at, (int, float)) or not isinstance(gen_id, str):
        raise ValueError("bad cursor")
    return float(created_at), gen_id


class Store(Protocol):
    """Durable generations and outputs, shared by every process of a product."""

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate to the newest schema (a legacy SQLite file is stamped at
        revision 1 first). Idempotent; safe when several processes start at once."""

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def healthy(self) -> bool:
        """``True`` when a trivial query answers within a couple of seconds; never raises."""

    # -- generations ----------------------------------------------------------------------

    async def insert(self, row: GenerationRow, deliveries: Iterable[DeliveryRow] = ()) -> None:
        """Insert a new generation (its id must be new), and ``deliveries`` in the same
        transaction."""

    async def insert_queued(self, row: GenerationRow, deliveries: Iterable[DeliveryRow] = ()) -> GenerationRow:
        """Insert a new ``queued`` generation with its ``queue_position`` (1 + the
        undispatched queued rows of its tool before it) and its webhook ``deliveries``, in one
        transaction under the dispatch lock: a concurrent ``refresh_queue_positions`` sees it
        with its position already saved, so the create's own update is the only one announcing it."""

    async def get(self, gen_id: str) -> GenerationRow | None: ...

    async def list_for_user(self, user_id: str, *, limit: int, status: str | None = None,
                            before: tuple[float, str] | None = None) -> list[GenerationRow]:
        """Newest first by ``(created_at, id)`` DESC; ``before`` is the keyset position
        of the last row of the previous page (from :func:`decode_cursor`), so pages stay
        consistent while rows are inserted (new rows are newer than every cursor)."""

    async def count_queued(self, user_id: str) -> int:
        """How many of the user's generations are ``queued`` (the fair-use cap)."""

    async def unfinished(self) -> list[GenerationRow]:
        """Every ``queued`` or ``running`` row, oldest first."""

    async def update(self, gen_id: str, **fields: Any) -> GenerationRow | None:
        """Set ``fields`` (names of :class:`GenerationRow`) unconditionally and
        ``updated_at`` (unless given); the row after the update, ``None`` if missing.
        Not for status changes that may race: use :meth:`transition`."""

    async def transition(self, gen_id: str, from_statuses: Iterable[str], to_status: str, *,
                         expect_attempt: int | None = None, deliveries: Iterable[DeliveryRow] = (),
                         **fields: Any) -> GenerationRow | None:
        """Move the row to ``to_status`` (and set ``fields``) only if its status is one of
        ``from_statuses`` (and, with ``expect_attempt``, its ``attempt`` is that number:
        the fence that makes a replaced runner's writes lose), in one conditional
        ``UPDATE``: the row after the update for the one caller that won, ``None`` for
        everyone else (or when the row is missing). The winner's ``deliveries`` (webhooks
        of the new status) are inserted in the same transaction: a recorded transition
        is never without its deliveries (an id already present is left as it is)."""

    async def claim_dispatchable(self, max_per_user: int, tool_limits: dict[str, int], now: float,
                                 owner: str, *, tool_share: float = 1.0) -> list[GenerationRow]:
        """Claim run slots, atomically across processes: walk the ``queued`` rows not yet
        dispatched in ``(created_at, id)`` order and take each whose user has fewer than
        ``max_per_user`` and whose tool fewer than ``tool_limits[tool]`` active runs
        (``running``, or ``queued`` with ``dispatched_at`` set). Taken rows get
        ``dispatched_at=now`` and ``owner=owner`` and are returned in that order. A row
        that does not fit is skipped (its user's/tool's later rows then cannot fit either,
        so each stays FIFO); rows of other users and tools may still go. Tools missing from
        ``tool_limits`` are not claimed (this process cannot run them). Fair use (work-conserving): a
        user beyond ``max(1, ceil(tool_share * limit))`` of a tool's slots gets no more of
        them while another user has a run waiting for that tool."""

    async def queue_position(self, gen_id: str) -> int | None:
        """How many undispatched ``queued`` rows of the same tool were created before this
        one; ``None`` unless the row is queued and undispatched."""

    async def expired(self, now: float, *, retry_after: float, limit: int) -> list[GenerationRow]:
        """Up to ``limit`` ``queued``/``running`` rows whose ``deadline_at`` is at or before
        ``now`` and whose cancel was not asked for in the last ``retry_after`` seconds
        (``cancel_requested_at``), oldest deadline first."""

    async def refresh_queue_positions(self, *, limit: int) -> list[GenerationRow]:
        """Recompute the position (1 = next) of every undispatched ``queued`` row among
        those of its tool, in ``(created_at, id)`` order, under the dispatch lock; save it in
        ``queue_position`` for at most ``limit`` rows whose saved value differs (front of
        each queue first) and return those rows: of concurrent callers only one sees each
        change, so each is published once."""

    async def recent_durations(self, tool_id: str, limit: int) -> list[float]:
        """``finished_at - started_at`` of the tool's ``limit`` most recently finished
        ``completed`` runs, newest first."""

    async def delete_finished_before(self, ts: float, batch: int) -> int:
        """Delete up to ``batch`` final generations finished before ``ts``, with their
        outputs and chunks, in one transaction; the number of generations deleted (loop
        while it equals ``batch``). ``queued``/``running`` rows are never touched."""

    # -- the outbox of run ends (revision 0007) ---------------------------------------------

    async def mark_announced(self, gen_id: str, at: float) -> None:
        """The run's terminal ``generationUpdate`` was published: set ``announced_at`` (the
        first time only) and release any announcement lease. Nothing for a missing row."""

    async def claim_unannounced(self, now: float, *, ended_before: float, lease_until: float,
                                limit: int) -> list[GenerationRow]:
        """Lease up to ``limit`` final rows not announced (``announced_at`` unset) that
        finished before ``ended_before`` and whose announcement lease (if any) expired by
        ``now``, oldest end first: their lease runs to ``lease_until``. Concurrent claimers
        never get the same row while its lease holds (SKIP LOCKED on PostgreSQL)."""

    async def claim_announcement(self, gen_id: str, now: float, lease_until: float) -> bool:
        """Lease one final row not announced, as :meth:`claim_unannounced` does (its end's
        age aside); ``False`` when it is announced, leased by someone else, or missing."""

    async def release_announcements(self, gen_ids: Iterable[str]) -> None:
        """Give up the leases of rows not announced (a publish failed): the next sweep of
        any process may claim them at once."""

    # -- webhook deliveries (revision 0005) ---------------------------------------------

    async def claim_deliveries(self, now: float, owner: str, lease_until: float, limit: int) -> list[DeliveryRow]:
        """Lease up to ``limit`` ``pending`` deliveries due by ``now`` whose lease (if any)
        has expired, oldest due first: they get ``lease_owner=owner`` and ``lease_until``.
        Concurrent claimers never get the same row (a lease taken is not expired)."""

    async def finish_attempt(self, delivery_id: str, owner: str, **fields: Any) -> bool:
        """Record an attempt's result (fields of :class:`DeliveryRow`) and release the
        lease, only if ``owner`` still holds it; ``False`` if it did not."""

    async def deliveries(self, generation_id: str) -> list[DeliveryRow]:
        """The generation's deliveries, oldest first."""

    # -- outputs --------------------------------------------------------------------------

    async def insert_output(self, row: OutputRow) -> None:
        """Insert output metadata without bytes (``size_bytes`` as given)."""

    async def write_output(self, row: OutputRow, chunks: AsyncIterator[bytes] | bytes) -> OutputRow:
        """Store an output's bytes, streamed in :data:`CHUNK_SIZE` rows, and its metadata;
        returns ``row`` with ``size_bytes`` set to the bytes written. The output becomes
        visible (``output``/``outputs``) only once complete. Beyond the store's
        ``max_output_bytes``: :class:`~livegate.errors.OutputTooLarge`, and on any failure
        (including cancellation) nothing of the output is left behind."""

    def read_output(self, output_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of an output (``end=None``: to its end), streamed
        chunk by chunk: only the chunks overlapping the range are read, never the whole
        output at once. Nothing for an unknown id."""

    async def outputs(self, ids: list[str]) -> list[OutputRow]:
        """The complete outputs among ``ids``, in the order of ``ids``."""

    async def output(self, output_id: str) -> OutputRow | None: ...
