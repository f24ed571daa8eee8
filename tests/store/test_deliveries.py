"""The webhook-delivery part of the store contract (revision 0005), on SQLite and PostgreSQL:
deliveries commit with the transition that won, two processes never lease the same row,
an expired lease is claimed again, a lost lease cannot record, retention takes them along."""

from __future__ import annotations

import asyncio
import time

from livegate.store import DeliveryRow, SqlStore
from tests.store.conftest import StoreKit
from tests.store.test_store_conformance import gen


def delivery(gen_id: str, event: str = "completed", endpoint: str = "billing", due: float = 0.0) -> DeliveryRow:
    return DeliveryRow(id=f"msg_{gen_id}_{event}_{endpoint}", generation_id=gen_id, event=event, endpoint=endpoint,
                       created_at=due, next_attempt_at=due)


async def test_deliveries_commit_with_the_transition_that_won_only(store: SqlStore) -> None:
    row = gen(status="running", webhook_url="https://example.com/h", webhook_events=["completed"])
    await store.insert(row, [delivery(row.id, "running", due=1.0)])
    assert (await store.get(row.id)).webhook_events == ["completed"]  # type: ignore[union-attr]
    won = await store.transition(row.id, {"running"}, "completed", deliveries=[delivery(row.id, due=2.0)])
    lost = await store.transition(row.id, {"running"}, "failed", deliveries=[delivery(row.id, "failed")])
    assert won is not None and lost is None
    assert [(d.event, d.status, d.attempts) for d in await store.deliveries(row.id)] == [
        ("running", "pending", 0), ("completed", "pending", 0)]


async def test_two_processes_never_lease_the_same_delivery(kit: StoreKit) -> None:
    one, two = await kit.make(), await kit.make()
    row = gen(status="completed")
    await one.insert(row, [delivery(row.id, endpoint=f"e{i}") for i in range(20)])
    now = time.time()
    claims = await asyncio.gather(*(store.claim_deliveries(now, f"p{i}", now + 30, 5)
                                    for i, store in enumerate([one, two, one, two, one, two])))
    ids = [d.id for claim in claims for d in claim]
    assert len(ids) == len(set(ids))  # never twice (a claimer may get fewer than it asked for)
    assert all(len(claim) <= 5 for claim in claims), [len(claim) for claim in claims]  # never more
    for _ in range(5):  # what the race left is claimed by the next sweeps
        ids += [d.id for d in await one.claim_deliveries(now, "next", now + 30, 5)]
    assert len(ids) == len(set(ids)) == 20
    assert await two.claim_deliveries(now, "late", now + 30, 5) == []  # all leased


async def test_a_claim_takes_at_most_its_limit_oldest_due_first(store: SqlStore) -> None:
    row = gen(status="completed")
    await store.insert(row, [delivery(row.id, endpoint=f"e{i:02d}", due=float(i)) for i in range(20)])
    taken = [await store.claim_deliveries(100.0, f"p{n}", 130.0, 3) for n in range(7)]
    assert [len(claim) for claim in taken] == [3, 3, 3, 3, 3, 3, 2]
    assert [d.next_attempt_at for claim in taken for d in claim] == [float(i) for i in range(20)]


async def test_an_expired_lease_is_claimed_again_and_the_old_owner_cannot_record(store: SqlStore) -> None:
    row = gen(status="completed")
    await store.insert(row, [delivery(row.id, due=100.0)])
    assert await store.claim_deliveries(99.0, "a", 130.0, 10) == []  # not due yet
    (first,) = await store.claim_deliveries(100.0, "a", 130.0, 10)
    assert first.lease_owner == "a" and await store.claim_deliveries(120.0, "b", 150.0, 10) == []
    (again,) = await store.claim_deliveries(131.0, "b", 161.0, 10)  # a's lease expired
    assert again.id == first.id and again.lease_owner == "b"
    assert not await store.finish_attempt(first.id, "a", status="delivered", attempts=1)
    assert await store.finish_attempt(first.id, "b", status="pending", attempts=1, next_attempt_at=140.0,
                                      last_error="HTTP 500 from the endpoint", last_status_code=500)
    (recorded,) = await store.deliveries(row.id)
    assert (recorded.status, recorded.attempts, recorded.lease_owner, recorded.last_status_code) == (
        "pending", 1, None, 500)
    (retry,) = await store.claim_deliveries(140.0, "c", 170.0, 10)
    assert retry.attempts == 1


async def test_retention_deletes_deliveries_with_their_generation(store: SqlStore) -> None:
    old = gen(status="completed", finished_at=10.0)
    await store.insert(old, [delivery(old.id)])
    assert await store.delete_finished_before(20.0, 10) == 1
    assert await store.deliveries(old.id) == []
