"""The durable outbox of run ends (issue 14): every run's terminal ``generationUpdate``
(asyncapi.yaml) reaches the bus at least once, whatever process dies when.

A run's end is recorded in the store first and published second. Once the publish
succeeded the row is marked announced (``Store.mark_announced``; a failure to mark is
only logged: the sweep repeats the announcement). An end whose publish failed (the bus
was down, and the process that kept it for republishing was killed before the bus came
back) or never happened (the process was killed between the two steps) stays a final row
with ``announced_at`` unset, and the :meth:`Outbox.sweep` of every process — each
dispatch tick, at most :attr:`Outbox.batch` rows per pass — republishes it from the record
once it has been unannounced for ``grace_seconds`` (``LIVEGATE_ANNOUNCE_GRACE_SECONDS``),
then marks it.

Repeats: the grace keeps a sweep away from ends whose own process is about to publish
them, and the lease taken per row (``Store.claim_unannounced`` / ``claim_announcement``,
released as soon as a publish fails) keeps two processes from republishing the same end
at once. A repeat stays possible (a process killed after its publish and before its mark;
Redis failing after it appended a publish but before answering) and is harmless: clients
treat ``generationUpdate`` as the run's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from livegate.errors import BusError, EventTooLarge, StoreUnavailable
from livegate.protocol import http
from livegate.service.publisher import Publisher
from livegate.store import GenerationRow, Store

__all__ = ["DEFAULT_ANNOUNCE_GRACE_SECONDS", "Outbox"]

log = logging.getLogger("livegate.generations")

#: ``LIVEGATE_ANNOUNCE_GRACE_SECONDS``' default: how long an end may stay unannounced
#: before any process's sweep republishes it.
DEFAULT_ANNOUNCE_GRACE_SECONDS = 5.0

BuildUpdate = Callable[[GenerationRow], Awaitable[http.GenerationUpdateInput]]


class Outbox:
    """``build`` makes a row's ``generationUpdate`` (outputs included); ``held_here`` says
    whether this process still keeps unpublished updates of a user in memory (it will
    publish them itself, in order: the sweep leaves that user's ends alone)."""

    batch = 100  # ends one sweep republishes at most
    lease_seconds = 15.0  # how long a claimed end is left to its claimer (a dead one's too): a publish takes less

    def __init__(self, store: Store, publisher: Publisher, build: BuildUpdate, held_here: Callable[[str], bool],
                 grace_seconds: float = DEFAULT_ANNOUNCE_GRACE_SECONDS) -> None:
        self.store = store
        self.publisher = publisher
        self.build = build
        self.held_here = held_here
        self.grace_seconds = grace_seconds

    async def mark(self, gen_id: str) -> None:
        """The end was published: mark it (a failure is logged; the sweep repeats it)."""
        try:
            await self.store.mark_announced(gen_id, time.time())
        except StoreUnavailable as exc:
            log.warning("could not mark a run's end announced (it will be announced again): %s", exc.message,
                        extra={"generation_id": gen_id})

    async def claim(self, gen_id: str) -> bool:
        """Take the lease of one end before republishing it from memory: ``False`` when it is
        announced already or another process is republishing it. With the store down the
        answer is ``True``: a repeat is harmless, a lost end is not."""
        now = time.time()
        try:
            return await self.store.claim_announcement(gen_id, now, now + self.lease_seconds)
        except StoreUnavailable:
            return True

    async def release(self, gen_ids: list[str]) -> None:
        """A publish failed: let any process's next sweep take these ends at once."""
        try:
            await self.store.release_announcements(gen_ids)
        except StoreUnavailable as exc:  # the leases expire by themselves
            log.warning("could not release announcement leases: %s", exc.message)

    async def sweep(self, now: float | None = None, *, grace: float | None = None) -> int:
        """Republish the ends unannounced for longer than ``grace`` (default
        ``grace_seconds``), oldest first, and mark them; how many were published. Stops at
        the first bus error (the bus is down: the rest wait for the next pass)."""
        now = time.time() if now is None else now
        grace = self.grace_seconds if grace is None else grace
        rows = await self.store.claim_unannounced(now, ended_before=now - grace, lease_until=now + self.lease_seconds,
                                                  limit=self.batch)
        published = 0
        left: list[str] = []
        for index, row in enumerate(rows):
            if self.held_here(row.user_id):
                left.append(row.id)
                continue
            try:
                await self.publisher.publish_one(row.user_id, await self.build(row))
            except BusError as exc:
                log.warning("could not announce %d run end(s), will retry: %s", len(rows) - index, exc.message)
                left.extend(r.id for r in rows[index:])
                break
            except EventTooLarge as exc:  # it never will fit: not worth a retry every tick
                log.error("a run's end cannot be announced: %s", exc.message, extra={"generation_id": row.id})
            else:
                published += 1
                log.info("announced a run's end its process had not announced",
                         extra={"generation_id": row.id, "user_id": row.user_id, "status": row.status})
            await self.mark(row.id)
        if left:
            await self.release(left)
        return published

    async def sweep_quietly(self, *, grace: float | None = None) -> None:
        try:
            await self.sweep(grace=grace)
        except StoreUnavailable as exc:
            log.warning("announcement sweep postponed: %s", exc.message)
