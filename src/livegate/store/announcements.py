"""The outbox of run ends: the ``Store`` methods on ``generations.announced_at`` and
``generations.announce_lease_until`` (revision 0007), mixed into ``SqlStore``.

A final row whose ``announced_at`` is unset is an end that may not have reached the bus:
its publish failed, or its process died between recording the end and publishing it.
Every process's sweep (:meth:`livegate.service.outbox.Outbox.sweep`) claims such rows with
a lease (:func:`livegate.store.leases.claim_rows`, as the webhook deliveries are claimed),
republishes them and marks them announced. The lease only makes a repeat rare; a repeat
of a terminal ``generationUpdate`` is harmless (clients treat it as the run's state).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from livegate.store.base import FINAL_STATUSES, GenerationRow
from livegate.store.leases import claim_rows
from livegate.store.schema import generations

__all__ = ["AnnouncementQueries"]

g = generations


def _claimable(now: float) -> list[ColumnElement[bool]]:
    # The same terms as the partial index generations_unannounced, so both dialects use it.
    return [g.c.announced_at.is_(None), g.c.status.in_(sorted(FINAL_STATUSES)),
            or_(g.c.announce_lease_until.is_(None), g.c.announce_lease_until < now)]


class AnnouncementQueries:
    """Mixed into ``SqlStore``; ``_row`` turns a ``generations`` row into a ``GenerationRow``."""

    if TYPE_CHECKING:
        def _tx(self, *, write: bool = True) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...

        @staticmethod
        def _row(r: RowMapping) -> GenerationRow: ...

    async def mark_announced(self, gen_id: str, at: float) -> None:
        statement = (update(g).where(g.c.id == gen_id, g.c.announced_at.is_(None))
                     .values(announced_at=at, announce_lease_until=None))
        async with self._tx() as conn:
            await conn.execute(statement)

    async def claim_unannounced(self, now: float, *, ended_before: float, lease_until: float,
                                limit: int) -> list[GenerationRow]:
        claimable = [*_claimable(now), g.c.finished_at < ended_before]
        rows = await claim_rows(self._tx, g, claimable, (g.c.finished_at, g.c.id), limit,
                                {"announce_lease_until": lease_until})
        return sorted((self._row(r) for r in rows), key=lambda row: (row.finished_at or 0.0, row.id))

    async def claim_announcement(self, gen_id: str, now: float, lease_until: float) -> bool:
        statement = (update(g).where(g.c.id == gen_id, *_claimable(now))
                     .values(announce_lease_until=lease_until).returning(g.c.id))
        async with self._tx() as conn:
            return (await conn.execute(statement)).first() is not None

    async def release_announcements(self, gen_ids: Iterable[str]) -> None:
        ids: list[Any] = list(gen_ids)
        if not ids:
            return
        async with self._tx() as conn:
            await conn.execute(update(g).where(g.c.id.in_(ids), g.c.announced_at.is_(None))
                               .values(announce_lease_until=None))
