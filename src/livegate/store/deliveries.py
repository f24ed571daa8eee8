"""The webhook-delivery half of :class:`~livegate.store.sql.SqlStore` (revision 0005).

The ``webhook_deliveries`` table is the delivery queue of every process (docs/scaling.md,
"Webhook deliveries"): rows are inserted with the lifecycle transition they report
(:func:`insert_deliveries`, called inside ``insert`` / ``transition``), claimed with a
lease (:meth:`DeliveryQueries.claim_deliveries`, :func:`livegate.store.leases.claim_rows`), and their
attempts recorded fenced by the lease owner (:meth:`DeliveryQueries.finish_attempt`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from livegate.store.base import DeliveryRow
from livegate.store.leases import claim_rows
from livegate.store.schema import webhook_deliveries

__all__ = ["DeliveryQueries", "delete_deliveries", "insert_deliveries"]

d = webhook_deliveries
DELIVERY_FIELDS = frozenset(DeliveryRow.__dataclass_fields__)


def _delivery(r: RowMapping) -> DeliveryRow:
    return DeliveryRow(**{name: r[name] for name in DELIVERY_FIELDS})


async def insert_deliveries(conn: AsyncConnection, rows: Iterable[DeliveryRow]) -> None:
    """Insert deliveries not present yet (their ids are stable, see ``policy.delivery_id``),
    in the caller's transaction."""
    rows = list(rows)
    if not rows:
        return
    present = set((await conn.execute(select(d.c.id).where(d.c.id.in_([r.id for r in rows])))).scalars())
    fresh = [vars(r) for r in rows if r.id not in present]
    if fresh:
        await conn.execute(insert(d), fresh)


async def delete_deliveries(conn: AsyncConnection, generation_ids: list[str]) -> None:
    """Retention: the deliveries go with their generations."""
    await conn.execute(delete(d).where(d.c.generation_id.in_(generation_ids)))


class DeliveryQueries:
    """Mixed into ``SqlStore``: the ``Store`` methods on ``webhook_deliveries``."""

    if TYPE_CHECKING:
        def _tx(self, *, write: bool = True) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...

    async def claim_deliveries(self, now: float, owner: str, lease_until: float, limit: int) -> list[DeliveryRow]:
        claimable = [d.c.status == "pending", d.c.next_attempt_at <= now,
                     or_(d.c.lease_until.is_(None), d.c.lease_until < now)]
        rows = await claim_rows(self._tx, d, claimable, (d.c.next_attempt_at, d.c.id), limit,
                                {"lease_owner": owner, "lease_until": lease_until})
        return sorted((_delivery(r) for r in rows), key=lambda r: (r.next_attempt_at or 0.0, r.id))

    async def finish_attempt(self, delivery_id: str, owner: str, **fields: Any) -> bool:
        unknown = set(fields) - DELIVERY_FIELDS
        if unknown or "id" in fields:
            raise TypeError(f"not settable delivery fields: {sorted(unknown | ({'id'} & set(fields)))}")
        statement = (update(d).where(d.c.id == delivery_id, d.c.lease_owner == owner)
                     .values(**fields, lease_owner=None, lease_until=None).returning(d.c.id))
        async with self._tx() as conn:
            return (await conn.execute(statement)).first() is not None

    async def deliveries(self, generation_id: str) -> list[DeliveryRow]:
        query = select(d).where(d.c.generation_id == generation_id).order_by(d.c.created_at, d.c.endpoint, d.c.id)
        async with self._tx(write=False) as conn:
            return [_delivery(r) for r in (await conn.execute(query)).mappings()]
