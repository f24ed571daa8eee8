"""The store's outbox of run ends (revision 0007), on SQLite and PostgreSQL: final rows
not announced are claimed with a lease once their end is older than the grace period,
by one claimer at a time, until marked announced; an upgrade counts history as announced."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import text

from livegate.store import GenerationRow, SqlStore
from livegate.store.migrate import _config
from tests.store.conftest import StoreKit
from tests.store.test_store_conformance import gen


def ended(status: str = "completed", finished_at: float = 1000.0, **fields: object) -> GenerationRow:
    return gen(status=status, created_at=finished_at - 10, started_at=finished_at - 5, finished_at=finished_at,
               **fields)  # type: ignore[arg-type]


async def test_final_rows_not_announced_are_claimed_once_older_than_the_grace_oldest_first(
    store: SqlStore,
) -> None:
    rows = [ended("failed", 1002.0), ended("completed", 1001.0), ended("cancelled", 1003.0),
            ended("completed", 1000.5, announced_at=1000.6)]
    for row in [*rows, gen(status="running"), gen(status="queued")]:
        await store.insert(row)
    # The grace: an end at 1003 is not older than 1003 yet.
    claimed = await store.claim_unannounced(2000.0, ended_before=1003.0, lease_until=2030.0, limit=10)
    assert [r.id for r in claimed] == [rows[1].id, rows[0].id]
    assert all(r.announced_at is None for r in claimed)
    # Leased: nobody gets them again until the lease ends (the third row is free).
    again = await store.claim_unannounced(2001.0, ended_before=1004.0, lease_until=2031.0, limit=10)
    assert [r.id for r in again] == [rows[2].id]
    expired = await store.claim_unannounced(2030.5, ended_before=1004.0, lease_until=2060.0, limit=1)
    assert [r.id for r in expired] == [rows[1].id]  # the oldest, its lease over; limit honoured


async def test_an_announced_row_is_never_claimed_again_and_keeps_its_first_mark(store: SqlStore) -> None:
    row = ended()
    await store.insert(row)
    assert len(await store.claim_unannounced(2000.0, ended_before=1500.0, lease_until=2030.0, limit=5)) == 1
    await store.mark_announced(row.id, 2000.5)
    await store.mark_announced(row.id, 2100.0)  # a repeat: the first announcement stands
    assert (await store.get(row.id)).announced_at == 2000.5  # type: ignore[union-attr]
    assert await store.claim_unannounced(9000.0, ended_before=9000.0, lease_until=9030.0, limit=5) == []
    assert await store.claim_announcement(row.id, 9000.0, 9030.0) is False
    await store.mark_announced("gen_missing", 1.0)  # nothing to do, no error


async def test_a_released_lease_is_claimable_at_once_and_one_claim_excludes_the_other(store: SqlStore) -> None:
    row = ended()
    await store.insert(row)
    assert await store.claim_announcement(row.id, 2000.0, 2030.0) is True
    assert await store.claim_announcement(row.id, 2001.0, 2031.0) is False  # leased
    assert await store.claim_unannounced(2001.0, ended_before=1500.0, lease_until=2031.0, limit=5) == []
    await store.release_announcements([row.id])  # the publish failed: give it back
    assert [r.id for r in await store.claim_unannounced(2002.0, ended_before=1500.0, lease_until=2032.0,
                                                        limit=5)] == [row.id]
    await store.release_announcements([])
    running = gen(status="running")
    await store.insert(running)
    assert await store.claim_announcement(running.id, 2000.0, 2030.0) is False  # not ended
    assert await store.claim_announcement("gen_missing", 2000.0, 2030.0) is False


async def test_concurrent_sweepers_never_claim_the_same_end(kit: StoreKit) -> None:
    first = await kit.make()
    rows = [ended(finished_at=1000.0 + i) for i in range(12)]
    for row in rows:
        await first.insert(row)
    sweepers = [first, *[await kit.make() for _ in range(3)]]
    results = await asyncio.gather(*(s.claim_unannounced(2000.0, ended_before=1500.0, lease_until=2030.0, limit=5)
                                     for s in sweepers))
    claimed = [r.id for result in results for r in result]
    assert len(claimed) == len(set(claimed))  # never twice
    assert len(claimed) == 12  # and nothing left behind (4 x 5 >= 12; SKIP LOCKED skips, not misses)


async def test_an_upgrade_counts_the_ends_already_recorded_as_announced(kit: StoreKit) -> None:
    store = await kit.make(open=False)
    await store.open(migrate_schema=False)
    async with store._tx() as conn:
        await conn.run_sync(lambda c: command.upgrade(_config(c), "0006"))
        for gen_id, status, finished in (("gen_done", "completed", 1000.0), ("gen_bad", "failed", None),
                                         ("gen_live", "running", None)):
            await conn.execute(text(
                "INSERT INTO generations (id, user_id, tool_id, status, inputs, created_at, updated_at, finished_at)"
                " VALUES (:id, 'alice', 'demo', :status, '{}', 900.0, 950.0, :finished)"),
                {"id": gen_id, "status": status, "finished": finished})
    await store.close()
    await store.open()  # to the newest revision
    assert (await store.get("gen_done")).announced_at == 1000.0  # type: ignore[union-attr]
    assert (await store.get("gen_bad")).announced_at == 950.0  # type: ignore[union-attr]
    assert (await store.get("gen_live")).announced_at is None  # type: ignore[union-attr]
    assert await store.claim_unannounced(9000.0, ended_before=9000.0, lease_until=9030.0, limit=10) == []
