"""The store's run-control methods (revision 0006), on SQLite and PostgreSQL: queued rows
inserted with their queue position, positions refreshed under the dispatch lock (each
change seen by one caller only), expired deadlines, recent run durations."""

from __future__ import annotations

import asyncio

from livegate.store import SqlStore
from tests.store.conftest import StoreKit
from tests.store.test_store_conformance import gen


async def test_queued_rows_are_inserted_with_their_position_and_refreshes_report_each_change_once(
    kit: StoreKit,
) -> None:
    store = await kit.make()
    t = 5000.0
    rows = [gen("alice", tool, created_at=t + i) for i, tool in enumerate(["demo", "demo", "slow", "demo"])]
    for row in rows:
        assert (await store.insert_queued(row)).queue_position == row.queue_position
    assert [r.queue_position for r in rows] == [1, 2, 1, 3]
    assert await store.refresh_queue_positions(limit=10) == []  # saved at insert: nothing changed

    await store.claim_dispatchable(4, {"demo": 1}, now=t + 10, owner="p1")  # the first demo row goes
    others = [await kit.make() for _ in range(3)]  # processes refreshing at the same time
    results = await asyncio.gather(*(s.refresh_queue_positions(limit=10) for s in [store, *others]))
    changed = [(r.id, r.queue_position) for result in results for r in result]
    assert sorted(changed) == sorted([(rows[1].id, 1), (rows[3].id, 2)])  # once each, in all
    assert (await store.get(rows[3].id)).queue_position == 2  # type: ignore[union-attr]


async def test_a_refresh_updates_at_most_limit_rows_front_first(store: SqlStore) -> None:
    t = 6000.0
    rows = [gen("alice", created_at=t + i) for i in range(5)]
    for row in rows:
        await store.insert(row)  # plain inserts: no position saved yet
    first = await store.refresh_queue_positions(limit=2)
    assert [(r.id, r.queue_position) for r in first] == [(rows[0].id, 1), (rows[1].id, 2)]
    rest = await store.refresh_queue_positions(limit=10)
    assert [r.queue_position for r in rest] == [3, 4, 5]


async def test_expired_lists_unfinished_rows_past_their_deadline_not_recently_swept(store: SqlStore) -> None:
    now = 7000.0
    due = gen(created_at=now - 10, deadline_at=now - 1)
    running = gen(status="running", created_at=now - 9, deadline_at=now - 2)
    later = gen(created_at=now - 8, deadline_at=now + 60)
    none = gen(created_at=now - 7)
    done = gen(status="cancelled", created_at=now - 6, deadline_at=now - 5)
    swept = gen(created_at=now - 5, deadline_at=now - 3, cancel_requested_at=now - 1)
    for row in (due, running, later, none, done, swept):
        await store.insert(row)
    assert [r.id for r in await store.expired(now, retry_after=10, limit=10)] == [running.id, due.id]
    assert [r.id for r in await store.expired(now + 20, retry_after=10, limit=10)] == [
        swept.id, running.id, due.id]  # oldest deadline first; the sweep of `swept` is 21 s old: again
    assert len(await store.expired(now, retry_after=10, limit=1)) == 1


async def test_recent_durations_of_completed_runs_of_one_tool_newest_first(store: SqlStore) -> None:
    for i, (tool, status, took) in enumerate([("demo", "completed", 2.0), ("demo", "failed", 9.0),
                                              ("demo", "completed", 4.0), ("slow", "completed", 7.0)]):
        await store.insert(gen(tool=tool, status=status, created_at=100.0 + i, started_at=200.0 + i,
                               finished_at=200.0 + i + took))
    assert await store.recent_durations("demo", 10) == [4.0, 2.0]
    assert await store.recent_durations("demo", 1) == [4.0]
    assert await store.recent_durations("none", 5) == []
