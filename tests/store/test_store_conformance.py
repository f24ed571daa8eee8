"""The store contract (livegate.store.base), run against every dialect: SQLite and a real
PostgreSQL. A backend passes when it behaves like this file says; the service and the job
engine rely on nothing else.

"Two processes" are two ``SqlStore`` instances on one database: separate engines and
pools, so races are decided by the database, not by this event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from livegate.errors import OutputTooLarge
from livegate.store import (
    CHUNK_SIZE,
    GenerationRow,
    OutputRow,
    SqlStore,
    decode_cursor,
    encode_cursor,
)
from tests.store.conftest import StoreKit

_ids = itertools.count(1)


def gen(user: str = "alice", tool: str = "demo", *, status: str = "queued", created_at: float | None = None,
        **fields: Any) -> GenerationRow:
    now = time.time() if created_at is None else created_at
    return GenerationRow(id=f"gen_{next(_ids):08d}", user_id=user, tool_id=tool, status=status,
                         inputs={"prompt": "hi", "n": 1}, created_at=now, updated_at=now, **fields)


def out(gen_id: str = "gen_x", user: str = "alice", **fields: Any) -> OutputRow:
    return OutputRow(id=f"out_{next(_ids):016x}", user_id=user, generation_id=gen_id, kind="file",
                     media_type="application/octet-stream", size_bytes=0, created_at=time.time(), **fields)


def payload(size: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


async def read_all(store: SqlStore, output_id: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([piece async for piece in store.read_output(output_id, start, end)])


# -- generations: insert, get, list -------------------------------------------------------------


async def test_insert_and_get_round_trip_every_field(store: SqlStore) -> None:
    row = gen(error={"code": "tool_error", "message": "x"}, output_ids=["out_a"], upstream_ref="p-1",
              started_at=1.5, finished_at=2.5, dispatched_at=1.25, job_id="job-1", attempt=2,
              request_sent_at=1.75, cancel_requested_at=2.0, owner="proc-a")
    await store.insert(row)
    assert await store.get(row.id) == row
    plain = gen()
    await store.insert(plain)
    got = await store.get(plain.id)
    assert got is not None and (got.attempt, got.dispatched_at, got.owner, got.output_ids, got.error) == (
        0, None, None, [], None)
    assert await store.get("gen_missing") is None


async def test_list_is_newest_first_by_created_at_then_id_with_keyset_pages(store: SqlStore) -> None:
    rows = [gen(created_at=100.0 + i // 2) for i in range(7)]  # pairs share a created_at
    rows.append(gen(user="bob", created_at=200.0))
    for row in rows:
        await store.insert(row)
    expected = sorted((r for r in rows if r.user_id == "alice"), key=lambda r: (r.created_at, r.id), reverse=True)
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_for_user("alice", limit=3, before=before)
        seen += [r.id for r in page]
        if len(page) < 3:
            break
        before = decode_cursor(encode_cursor(page[-1]))
    assert seen == [r.id for r in expected]
    await store.update(rows[2].id, status="completed")
    assert [r.id for r in await store.list_for_user("alice", limit=10, status="completed")] == [rows[2].id]
    assert await store.list_for_user("carol", limit=10) == []


async def test_pages_stay_consistent_while_rows_are_inserted(kit: StoreKit) -> None:
    store, writer = await kit.make(), await kit.make()
    base = time.time() - 1000
    old = [gen(created_at=base + i) for i in range(30)]
    for row in old:
        await store.insert(row)
    stop = asyncio.Event()
    inserted: list[str] = []

    async def insert_newer() -> None:
        while not stop.is_set():
            row = gen()
            await writer.insert(row)
            inserted.append(row.id)
            await asyncio.sleep(0)

    task = asyncio.create_task(insert_newer())
    try:
        # the first page starts below the rows that exist now; every later page follows
        # its cursor, and no page may repeat or skip one of the 30 rows
        seen: list[str] = []
        before: tuple[float, str] | None = (base + 30, "")
        while True:
            page = await store.list_for_user("alice", limit=4, before=before)
            seen += [r.id for r in page]
            if len(page) < 4:
                break
            before = (page[-1].created_at, page[-1].id)
            while len(inserted) < len(seen) // 4:  # make sure inserts really interleave
                await asyncio.sleep(0.001)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert seen == [r.id for r in reversed(old)]
    assert inserted  # rows were inserted meanwhile, and none of them leaked into old pages


async def test_unfinished_lists_queued_and_running_oldest_first(store: SqlStore) -> None:
    rows = [gen(status=s, created_at=10.0 + i) for i, s in enumerate(["running", "completed", "queued", "failed"])]
    for row in rows:
        await store.insert(row)
    assert [r.id for r in await store.unfinished()] == [rows[0].id, rows[2].id]


async def test_count_queued_counts_one_users_queued_rows_only(store: SqlStore) -> None:
    for i, (user, status) in enumerate([("a", "queued"), ("a", "queued"), ("a", "running"), ("b", "queued")]):
        await store.insert(gen(user, status=status, created_at=10.0 + i))
    assert (await store.count_queued("a"), await store.count_queued("b"), await store.count_queued("c")) == (2, 1, 0)


# -- update and transition -----------------------------------------------------------------------


async def test_update_sets_fields_and_refuses_unknown_ones(store: SqlStore) -> None:
    row = gen()
    await store.insert(row)
    updated = await store.update(row.id, upstream_ref="prompt-9", error={"code": "timeout", "message": "t"},
                                 output_ids=["out_1", "out_2"], attempt=3)
    assert updated is not None and updated.updated_at >= row.updated_at
    assert (updated.upstream_ref, updated.error, updated.output_ids, updated.attempt) == (
        "prompt-9", {"code": "timeout", "message": "t"}, ["out_1", "out_2"], 3)
    assert await store.get(row.id) == updated
    with pytest.raises(TypeError):
        await store.update(row.id, colour="red")
    assert await store.update("gen_missing", attempt=1) is None


async def test_transition_applies_only_from_the_given_statuses(store: SqlStore) -> None:
    row = gen()
    await store.insert(row)
    assert await store.transition(row.id, {"running"}, "completed") is None
    moved = await store.transition(row.id, {"queued"}, "running", started_at=5.0, owner="p1")
    assert moved is not None and (moved.status, moved.started_at, moved.owner) == ("running", 5.0, "p1")
    assert await store.transition(row.id, {"queued"}, "cancelled") is None
    got = await store.get(row.id)
    assert got is not None and got.status == "running"
    assert await store.transition("gen_missing", {"queued"}, "running") is None


async def test_of_twenty_concurrent_transitions_exactly_one_wins(kit: StoreKit) -> None:
    one, two = await kit.make(), await kit.make()
    row = gen(status="running")
    await one.insert(row)
    outcomes = ["completed", "failed", "cancelled", "completed"] * 5

    async def attempt(i: int) -> GenerationRow | None:
        store = one if i % 2 else two
        return await store.transition(row.id, {"queued", "running"}, outcomes[i], finished_at=float(i),
                                      error={"code": "tool_error", "message": str(i)})

    results = await asyncio.gather(*(attempt(i) for i in range(20)))
    winners = [(i, r) for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    index, won = winners[0]
    assert await one.get(row.id) == won
    assert (won.status, won.finished_at, won.error) == (
        outcomes[index], float(index), {"code": "tool_error", "message": str(index)})


# -- claim_dispatchable ------------------------------------------------------------------------


async def test_claims_honour_user_and_tool_limits_in_fifo_order(store: SqlStore) -> None:
    t = 1000.0
    a1, a2, a3 = (gen("alice", "demo", created_at=t + i) for i in range(3))
    b1 = gen("bob", "demo", created_at=t + 3)
    c1, c2 = gen("carol", "slow", created_at=t + 4), gen("carol", "slow", created_at=t + 5)
    d1 = gen("dave", "unknown", created_at=t + 6)
    busy = gen("erin", "slow", status="running", created_at=t - 10)  # already running: counts
    for row in (a1, a2, a3, b1, c1, c2, d1, busy):
        await store.insert(row)
    claimed = await store.claim_dispatchable(2, {"demo": 3, "slow": 2}, now=t + 50, owner="p1")
    # alice gets 2 (user limit), bob the third demo slot, carol one slow slot (erin holds one)
    assert [r.id for r in claimed] == [a1.id, a2.id, b1.id, c1.id]
    assert all(r.dispatched_at == t + 50 and r.owner == "p1" and r.status == "queued" for r in claimed)
    assert await store.claim_dispatchable(2, {"demo": 3, "slow": 2}, now=t + 51, owner="p1") == []
    # a slot frees: the next in line of that user/tool goes, nothing else
    await store.transition(a1.id, {"queued"}, "completed", finished_at=t + 52)
    again = await store.claim_dispatchable(2, {"demo": 3, "slow": 2}, now=t + 53, owner="p2")
    assert [r.id for r in again] == [a3.id]
    await store.transition(busy.id, {"running"}, "failed", finished_at=t + 54)
    assert [r.id for r in await store.claim_dispatchable(2, {"demo": 3, "slow": 2}, t + 55, "p2")] == [c2.id]
    got = await store.get(d1.id)
    assert got is not None and got.dispatched_at is None  # a tool this process cannot run is left alone


async def test_concurrent_claimers_never_exceed_the_limits_together(kit: StoreKit) -> None:
    stores = [await kit.make() for _ in range(3)]
    users, tools = ["u1", "u2", "u3", "u4"], {"demo": 5, "slow": 3}
    t = 2000.0
    rows = [gen(users[i % 4], "demo" if i % 3 else "slow", created_at=t + i) for i in range(40)]
    for row in rows:
        await stores[0].insert(row)

    async def claimer(i: int) -> list[GenerationRow]:
        return await stores[i % 3].claim_dispatchable(2, tools, now=t + 100 + i, owner=f"p{i % 3}")

    claimed = [r for batch in await asyncio.gather(*(claimer(i) for i in range(12))) for r in batch]
    ids = [r.id for r in claimed]
    assert len(ids) == len(set(ids))  # no row claimed twice
    per_user = {u: sum(1 for r in claimed if r.user_id == u) for u in users}
    per_tool = {tool: sum(1 for r in claimed if r.tool_id == tool) for tool in tools}
    assert all(n <= 2 for n in per_user.values()), per_user
    assert per_tool["demo"] <= 5 and per_tool["slow"] <= 3, per_tool
    # and the limits were reached: claimers do not starve each other either
    assert sum(per_user.values()) == min(8, 5 + 3)
    dispatched = [r for r in await stores[1].unfinished() if r.dispatched_at is not None]
    assert sorted(r.id for r in dispatched) == sorted(ids)


async def test_queue_position_counts_undispatched_rows_of_the_same_tool_ahead(store: SqlStore) -> None:
    t = 3000.0
    first, other_tool, second, third = (gen("alice", tool, created_at=t + i)
                                        for i, tool in enumerate(["demo", "slow", "demo", "demo"]))
    for row in (first, other_tool, second, third):
        await store.insert(row)
    assert [await store.queue_position(r.id) for r in (first, second, third, other_tool)] == [0, 1, 2, 0]
    await store.claim_dispatchable(4, {"demo": 1}, now=t + 10, owner="p1")
    assert await store.queue_position(first.id) is None  # dispatched: no longer waiting
    assert [await store.queue_position(r.id) for r in (second, third)] == [0, 1]
    assert await store.queue_position("gen_missing") is None


# -- outputs ------------------------------------------------------------------------------------


async def test_outputs_round_trip_across_chunk_boundaries_and_processes(kit: StoreKit) -> None:
    writer, reader = await kit.make(), await kit.make()
    data = payload(2 * CHUNK_SIZE + 12345)

    async def odd_pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_003):  # not aligned to chunks
            yield data[start:start + 100_003]

    row = await writer.write_output(out(filename="a.bin"), odd_pieces())
    assert row.size_bytes == len(data)
    meta = await reader.output(row.id)
    assert meta is not None and meta.size_bytes == len(data) and meta.filename == "a.bin"
    assert await read_all(reader, row.id) == data
    c = CHUNK_SIZE
    for start, end in [(0, 1), (0, c), (c - 1, c + 1), (c, 2 * c), (5, 2 * c + 7), (2 * c, len(data)),
                       (len(data) - 1, len(data)), (3, len(data) + 999)]:
        assert await read_all(reader, row.id, start, end) == data[start:end], (start, end)
    assert await read_all(reader, row.id, len(data), None) == b""
    assert await read_all(reader, "out_missing") == b""
    small = await writer.write_output(out(), b"hello")
    empty = await writer.write_output(out(), b"")
    assert [o.id for o in await reader.outputs([small.id, "out_missing", row.id, empty.id])] == [
        small.id, row.id, empty.id]
    assert (await read_all(reader, small.id), await read_all(reader, empty.id)) == (b"hello", b"")


async def test_a_range_read_touches_only_the_chunks_it_overlaps(kit: StoreKit) -> None:
    store = await kit.make()
    data = payload(3 * CHUNK_SIZE)
    row = await store.write_output(out(), data)
    async with store._tx() as conn:
        from sqlalchemy import text

        await conn.execute(text("DELETE FROM output_chunks WHERE output_id = :id AND seq <> 1"), {"id": row.id})
    start, end = CHUNK_SIZE + 10, 2 * CHUNK_SIZE - 10
    assert await read_all(store, row.id, start, end) == data[start:end]
    # and pieces come one chunk at a time, never the output as one blob
    pieces = [p async for p in store.read_output(row.id, CHUNK_SIZE, 2 * CHUNK_SIZE)]
    assert [len(p) for p in pieces] == [CHUNK_SIZE]


async def test_an_output_is_invisible_until_completely_written(kit: StoreKit) -> None:
    writer, reader = await kit.make(), await kit.make()
    gate, wrote_first = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield payload(CHUNK_SIZE)
        yield payload(CHUNK_SIZE)
        # the writer reads one chunk ahead: asking for this one means chunk 0 is committed
        wrote_first.set()
        await gate.wait()
        yield payload(10)

    row = out()
    task = asyncio.create_task(writer.write_output(row, slow()))
    await asyncio.wait_for(wrote_first.wait(), 5)
    assert await kit.scalar("SELECT COUNT(*) FROM output_chunks WHERE output_id = :id", id=row.id) == 1
    assert await reader.output(row.id) is None and await reader.outputs([row.id]) == []
    assert await read_all(reader, row.id) == b""
    gate.set()
    stored = await asyncio.wait_for(task, 5)
    assert stored.size_bytes == 2 * CHUNK_SIZE + 10
    assert (await reader.output(row.id)) is not None


async def test_an_output_beyond_the_limit_is_refused_and_nothing_stays(kit: StoreKit) -> None:
    store = await kit.make(max_output_bytes=CHUNK_SIZE + 100)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield payload(CHUNK_SIZE // 2)

    streamed, whole = out(), out()
    with pytest.raises(OutputTooLarge) as caught:
        await store.write_output(streamed, stream())
    assert caught.value.limit == CHUNK_SIZE + 100 and caught.value.code == "output_too_large"
    with pytest.raises(OutputTooLarge):
        await store.write_output(whole, payload(CHUNK_SIZE + 101))
    for row in (streamed, whole):
        assert await store.output(row.id) is None
        assert await kit.scalar("SELECT COUNT(*) FROM outputs WHERE id = :id", id=row.id) == 0
        assert await kit.scalar("SELECT COUNT(*) FROM output_chunks WHERE output_id = :id", id=row.id) == 0
    exact = await store.write_output(out(), payload(CHUNK_SIZE + 100))
    assert exact.size_bytes == CHUNK_SIZE + 100


async def test_a_failing_producer_leaves_nothing_behind(kit: StoreKit) -> None:
    store = await kit.make()

    async def broken() -> AsyncIterator[bytes]:
        yield payload(CHUNK_SIZE)
        yield payload(CHUNK_SIZE)
        raise RuntimeError("upstream cut")

    row = out()
    with pytest.raises(RuntimeError):
        await store.write_output(row, broken())
    assert await kit.scalar("SELECT COUNT(*) FROM output_chunks WHERE output_id = :id", id=row.id) == 0
    assert await kit.scalar("SELECT COUNT(*) FROM outputs WHERE id = :id", id=row.id) == 0


# -- retention ----------------------------------------------------------------------------------


async def test_retention_deletes_only_old_finished_rows_with_their_outputs(kit: StoreKit) -> None:
    store = await kit.make()
    now = time.time()
    old = now - 40 * 86400
    old_done = [gen(status=s, created_at=old, finished_at=old + 1) for s in ("completed", "failed", "cancelled")]
    old_queued = gen(status="queued", created_at=old)
    old_running = gen(status="running", created_at=old, started_at=old)
    recent = gen(status="completed", created_at=now - 3600, finished_at=now - 3000)
    for row in (*old_done, old_queued, old_running, recent):
        await store.insert(row)
    old_outputs = [await store.write_output(out(old_done[0].id), payload(CHUNK_SIZE + 5)) for _ in range(2)]
    kept_output = await store.write_output(out(recent.id), b"keep me")
    running_output = await store.write_output(out(old_running.id), b"partial")

    cutoff = now - 30 * 86400
    assert await store.delete_finished_before(cutoff, batch=2) == 2  # bounded
    assert await store.delete_finished_before(cutoff, batch=2) == 1
    assert await store.delete_finished_before(cutoff, batch=2) == 0
    for row in old_done:
        assert await store.get(row.id) is None
    for row in (old_queued, old_running, recent):
        assert await store.get(row.id) is not None
    for output in old_outputs:
        assert await store.output(output.id) is None
        assert await kit.scalar("SELECT COUNT(*) FROM output_chunks WHERE output_id = :id", id=output.id) == 0
    assert await read_all(store, kept_output.id) == b"keep me"
    assert await read_all(store, running_output.id) == b"partial"


# -- health and lifecycle ---------------------------------------------------------------------------


async def test_health_open_twice_and_close(kit: StoreKit) -> None:
    store = await kit.make()
    assert await store.healthy()
    await store.open()  # idempotent
    await store.close()
    assert not await store.healthy()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("gen_x")


# -- migrations --------------------------------------------------------------------------------


async def test_an_empty_database_is_migrated_to_the_schema_of_schema_py(kit: StoreKit) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from livegate.store.migrate import head_revision
    from livegate.store.schema import metadata

    fresh = await kit.make(open=False)
    await fresh.open(migrate_schema=False)
    assert await fresh.current_revision() is None
    await fresh.close()
    await fresh.open()
    assert await fresh.current_revision() == head_revision()
    async with fresh._tx(write=False) as conn:
        diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    # Only the store's own tables are compared (later revisions may add tables that other
    # parts own), and SQLite's reflection cannot compare an index on expressions
    # (``created_at DESC``): Alembic reports it as removed and added.
    diffs = [d for d in diffs if _diff_table(d) in metadata.tables and not (
        kit.backend == "sqlite" and isinstance(d, tuple) and d[0] in ("remove_index", "add_index")
        and d[1].name == "generations_by_user")]
    assert diffs == []  # the migrations build exactly the tables the code queries


def _diff_table(diff: Any) -> str | None:
    """The table an Alembic autogenerate diff is about."""
    if isinstance(diff, list):  # modify_* ops: [(op, schema, table, column, ...)]
        return str(diff[0][2])
    thing = diff[1]
    table = getattr(thing, "table", thing)
    return getattr(table, "name", None)


async def test_processes_starting_together_migrate_once(kit: StoreKit) -> None:
    from livegate.store.migrate import head_revision

    stores = [await kit.make(open=False) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    assert {await s.current_revision() for s in stores} == {head_revision()}
    row = gen()
    await stores[0].insert(row)
    assert await stores[2].get(row.id) == row


# The schema the releases before livegate.store created by hand (service/store.py).
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, tool_id TEXT NOT NULL, status TEXT NOT NULL,
    inputs TEXT NOT NULL, output_ids TEXT NOT NULL DEFAULT '[]', error TEXT, upstream_ref TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS generations_by_user ON generations (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS generations_unfinished ON generations (status) WHERE status IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS outputs (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, generation_id TEXT NOT NULL, kind TEXT NOT NULL,
    media_type TEXT NOT NULL, size_bytes INTEGER NOT NULL, filename TEXT, width INTEGER, height INTEGER,
    duration_seconds REAL, text TEXT, created_at REAL NOT NULL
);
"""


def make_legacy_data_dir(data_dir: Path) -> dict[str, bytes]:
    """A data dir as the old code left it: SQLite rows + output files under outputs/xx/."""
    import sqlite3

    data_dir.mkdir(parents=True, exist_ok=True)
    files = {"out_00000000000000aa": payload(CHUNK_SIZE * 2 + 77), "out_00000000000000bb": b"Hello",
             "out_00000000000000cc": b""}
    db = sqlite3.connect(data_dir / "livegate.sqlite3")
    db.executescript(LEGACY_SCHEMA)
    db.execute("INSERT INTO generations VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               ("gen_old1", "alice", "demo", "completed", '{"prompt": "x"}', json.dumps(list(files)), None, None,
                10.0, 12.0, 11.0, 12.0))
    db.execute("INSERT INTO generations VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               ("gen_old2", "alice", "demo", "running", "{}", "[]", None, "p-7", 20.0, 21.0, 21.0, None))
    for name, data in files.items():
        db.execute("INSERT INTO outputs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (name, "alice", "gen_old1", "file", "application/octet-stream", len(data), "f.bin",
                    None, None, None, None, 12.0))
        path = data_dir / "outputs" / name[4:6] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    orphan = data_dir / "outputs" / "00" / "out_00000000000000dd"  # a file without a record
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    db.commit()
    db.close()
    return files


async def test_a_legacy_sqlite_file_is_stamped_upgraded_and_its_output_files_imported(tmp_path: Path) -> None:
    from livegate.store import sqlite_url
    from livegate.store.migrate import head_revision

    data_dir = tmp_path / "data"
    files = make_legacy_data_dir(data_dir)
    store = SqlStore(sqlite_url(data_dir / "livegate.sqlite3"), legacy_outputs_dir=data_dir / "outputs")
    before = await _legacy_revision(store)
    assert before is None
    await store.open()
    try:
        assert await store.current_revision() == head_revision()
        done, running = await store.get("gen_old1"), await store.get("gen_old2")
        assert done is not None and running is not None
        assert (done.status, done.inputs, done.output_ids[0], done.finished_at) == (
            "completed", {"prompt": "x"}, "out_00000000000000aa", 12.0)
        assert (running.status, running.upstream_ref, running.attempt, running.dispatched_at) == (
            "running", "p-7", 0, None)
        for name, data in files.items():
            assert await read_all(store, name) == data, name
            assert await read_all(store, name, 3, 9) == data[3:9]
        assert await store.output("out_00000000000000dd") is None
        assert (data_dir / "outputs" / ".imported-into-database").exists()
        assert await store.list_for_user("alice", limit=5) == [running, done]
    finally:
        await store.close()
    # a second start finds the marker: nothing is imported twice, bytes unchanged
    (data_dir / "outputs" / "00" / "out_00000000000000bb").write_bytes(b"changed on disk")
    again = SqlStore(sqlite_url(data_dir / "livegate.sqlite3"), legacy_outputs_dir=data_dir / "outputs")
    await again.open()
    try:
        assert await read_all(again, "out_00000000000000bb") == b"Hello"
    finally:
        await again.close()


async def _legacy_revision(store: SqlStore) -> str | None:
    await store.open(migrate_schema=False)
    try:
        return await store.current_revision()
    finally:
        await store.close()


def test_the_db_commands_upgrade_and_report_the_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from livegate.cli import main
    from livegate.store.migrate import head_revision

    data_dir = tmp_path / "data"
    make_legacy_data_dir(data_dir)
    monkeypatch.setenv("LIVEGATE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("LIVEGATE_DATABASE_URL", raising=False)
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == "none"
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == head_revision()
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == head_revision()
    monkeypatch.setenv("LIVEGATE_DATABASE_URL", "postgresql://livegate@127.0.0.1:9/none")
    assert main(["db", "current"]) == 1
    assert "database is unavailable" in capsys.readouterr().err


# -- PostgreSQL outages ------------------------------------------------------------------------


async def test_a_killed_postgres_raises_store_unavailable_and_the_store_recovers_by_itself() -> None:
    from livegate.errors import StoreUnavailable
    from livegate.testing.postgres_server import PostgresServer

    with PostgresServer() as server:
        store = SqlStore(server.url, connect_timeout=2.0)
        await store.open()
        try:
            row = gen()
            await store.insert(row)
            assert await store.healthy()
            server.kill()
            assert not await store.healthy()
            for call in (store.get(row.id), store.transition(row.id, {"queued"}, "running"),
                         store.claim_dispatchable(4, {"demo": 4}, time.time(), "p1"),
                         store.write_output(out(row.id), b"x"), read_all(store, "out_x", 0, 5)):
                with pytest.raises(StoreUnavailable) as caught:
                    await call
                assert caught.value.code == "database_unavailable"
            server.start()  # same port, same data: crash recovery
            # the pool drops its dead connections by itself (pre-ping): no reopen needed
            assert await store.healthy()
            got = await store.get(row.id)
            assert got == row  # committed before the crash, still there; the failed writes were not applied
            assert await store.transition(row.id, {"queued"}, "running") is not None
        finally:
            await store.close()
