"""The store on SQLAlchemy 2 Core (async): ``sqlite+aiosqlite`` or ``postgresql+psycopg``.

One code path for both dialects; where they differ it is said here:

* **Transactions on SQLite.** pysqlite's own transaction handling is switched off
  (``isolation_level = None``) and every transaction starts with an explicit ``BEGIN``;
  writes use ``BEGIN IMMEDIATE`` so a transaction that reads and then writes takes the
  write lock first and waits (``busy_timeout``) instead of failing with "database is
  locked" when another process writes. WAL lets readers go on meanwhile.
* **Dispatch lock.** ``claim_dispatchable`` serialises claimers with
  ``pg_advisory_xact_lock`` on PostgreSQL (released at commit) and with the SQLite write
  lock that ``BEGIN IMMEDIATE`` took.
* **RETURNING** on both (SQLite 3.35+), so a conditional update and its result are one
  statement.

Driver and pool errors that mean "the database cannot be reached" become
:class:`~livegate.errors.StoreUnavailable` at this boundary (see ``_UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, event, func, insert, or_, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from livegate.errors import OutputTooLarge, StoreUnavailable
from livegate.store import migrate
from livegate.store.announcements import AnnouncementQueries
from livegate.store.base import (
    CHUNK_SIZE,
    FINAL_STATUSES,
    GENERATION_FIELDS,
    UNFINISHED_STATUSES,
    DeliveryRow,
    GenerationRow,
    OutputRow,
)
from livegate.store.deliveries import DeliveryQueries, delete_deliveries, insert_deliveries
from livegate.store.schema import generations, output_chunks, outputs

if TYPE_CHECKING:
    from livegate.config import Config

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "SqlStore", "normalize_url", "sqlite_url"]

log = logging.getLogger("livegate.store")

DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024 * 1024
_DISPATCH_LOCK = 0x6C67_6469  # "lgdi": any constant every livegate process shares
_WRITING = -1  # outputs.size_bytes while the chunks are being written (never served)
_LEGACY_OUTPUT = re.compile(r"^out_[0-9a-f]{16}$")
_LEGACY_MARKER = ".imported-into-database"
# Errors that say "cannot reach the database now", not "this query is wrong". SQLAlchemy
# wraps driver errors (psycopg.OperationalError, sqlite3.OperationalError such as
# "database is locked") in its own classes.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # the pool had no connection to give within pool_timeout
    sa_exc.DisconnectionError,
    OSError,
)
_JSON_FIELDS = {"inputs", "output_ids"}

g = generations
o = outputs
c = output_chunks


def normalize_url(url: str) -> str:
    """Pin the async driver: ``postgresql://`` / ``postgres://`` -> ``postgresql+psycopg://``,
    ``sqlite://`` -> ``sqlite+aiosqlite://``; a URL that names its driver is kept."""
    for prefix, driver in (("postgresql://", "postgresql+psycopg://"), ("postgres://", "postgresql+psycopg://"),
                           ("sqlite://", "sqlite+aiosqlite://")):
        if url.startswith(prefix):
            return driver + url[len(prefix):]
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")


def _generation(r: RowMapping) -> GenerationRow:
    return GenerationRow(
        id=r["id"], user_id=r["user_id"], tool_id=r["tool_id"], status=r["status"],
        inputs=json.loads(r["inputs"]), output_ids=json.loads(r["output_ids"]),
        error=json.loads(r["error"]) if r["error"] else None, upstream_ref=r["upstream_ref"],
        created_at=r["created_at"], updated_at=r["updated_at"], started_at=r["started_at"],
        finished_at=r["finished_at"], dispatched_at=r["dispatched_at"], job_id=r["job_id"],
        attempt=r["attempt"], request_sent_at=r["request_sent_at"],
        cancel_requested_at=r["cancel_requested_at"], owner=r["owner"],
        progress=json.loads(r["progress"]) if r["progress"] else None,
        webhook_url=r["webhook_url"], webhook_events=json.loads(r["webhook_events"]) if r["webhook_events"] else None,
        deadline_at=r["deadline_at"], queue_position=r["queue_position"], announced_at=r["announced_at"],
    )


def _columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Row fields as column values (JSON fields encoded); unknown names are a bug."""
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in GENERATION_FIELDS or name == "id":
            raise TypeError(f"not a settable generation field: {name!r}")
        if name in _JSON_FIELDS:
            value = json.dumps(value)
        elif name in ("error", "progress", "webhook_events"):
            value = json.dumps(value) if value else None
        values[name] = value
    return values


def _output(r: RowMapping) -> OutputRow:
    return OutputRow(**{name: r[name] for name in OutputRow.__dataclass_fields__})


async def _rechunk(source: AsyncIterator[bytes] | bytes, size: int) -> AsyncIterator[bytes]:
    """``source`` as pieces of exactly ``size`` bytes (the last one shorter)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        for start in range(0, len(data), size):
            yield data[start:start + size]
        return
    buffer = bytearray()
    async for piece in source:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while piece := await asyncio.to_thread(handle.read, size):
            yield piece
    finally:
        handle.close()


class SqlStore(DeliveryQueries, AnnouncementQueries):
    """:class:`livegate.store.base.Store` on one SQLAlchemy async engine.

    :param url: ``sqlite+aiosqlite:///path`` or ``postgresql://user@host:port/db``
        (rewritten to psycopg 3, see :func:`normalize_url`).
    :param max_output_bytes: ``write_output`` refuses bigger outputs.
    :param legacy_outputs_dir: the ``outputs/`` directory of a data dir written by the
        releases that kept output bytes in files; ``open`` imports them once.
    :param connect_timeout: bound on connecting and on waiting for a pooled connection.
    :param claim_scan: how many of the oldest undispatched rows one
        ``claim_dispatchable`` call looks at.
    """

    _row = staticmethod(_generation)  # for the mixins

    def __init__(self, url: str, *, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, chunk_size: int = CHUNK_SIZE,
                 legacy_outputs_dir: Path | None = None, pool_size: int = 5, connect_timeout: float = 5.0,
                 claim_scan: int = 1000) -> None:
        self.url = normalize_url(url)
        self.max_output_bytes = max_output_bytes
        self.chunk_size = chunk_size
        self.legacy_outputs_dir = legacy_outputs_dir
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.claim_scan = claim_scan
        self.read_batch = max(1, (1024 * 1024) // chunk_size)  # chunks per query of read_output (~1 MiB)
        self._engine: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None

    @classmethod
    def from_config(cls, config: Config) -> SqlStore:
        """``LIVEGATE_DATABASE_URL`` when set, else SQLite under ``LIVEGATE_DATA_DIR``."""
        if config.database_url:
            return cls(config.database_url, max_output_bytes=config.max_output_bytes)
        data_dir = Path(config.data_dir)
        return cls(sqlite_url(data_dir / "livegate.sqlite3"), max_output_bytes=config.max_output_bytes,
                   legacy_outputs_dir=data_dir / "outputs")

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    def __repr__(self) -> str:
        return f"SqlStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    # -- lifecycle ------------------------------------------------------------------------

    def _make_engine(self) -> AsyncEngine:
        url: URL = make_url(self.url)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # One connection per process: SQLite has one writer at a time anyway, and a
            # single connection keeps this process's statements in call order (runs start
            # in FIFO order, as with the single aiosqlite connection before). Other
            # processes wait on the file lock (busy_timeout).
            engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=30.0,
                                         connect_args={"timeout": 30.0})
            event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
            return engine
        return create_async_engine(
            url,
            pool_size=self.pool_size,
            max_overflow=self.pool_size,
            pool_timeout=self.connect_timeout,
            # A pooled connection may be dead after a database restart: test it on checkout,
            # so recovery needs no restart of ours.
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(2, round(self.connect_timeout))},
        )

    def _engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        if self._engine is None or self._writer is None:
            raise RuntimeError("store is not open")
        return self._engine, self._writer

    async def open(self, *, migrate_schema: bool = True) -> None:
        if self._engine is not None:
            return
        self._engine = self._make_engine()
        self._writer = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        if not migrate_schema:
            return
        try:
            async with self._tx() as conn:
                revision = await conn.run_sync(migrate.upgrade)
            log.info("database at revision %s", revision, extra={"database": repr(self)})
            if self.legacy_outputs_dir is not None:
                await self._import_legacy_outputs(self.legacy_outputs_dir)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        engine, self._engine, self._writer = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    async def current_revision(self) -> str | None:
        """The database's Alembic revision (``None``: empty or legacy); does not migrate."""
        async with self._tx(write=False) as conn:
            return await conn.run_sync(migrate.current_revision)

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(2.0), self._tx(write=False) as conn:
                await conn.execute(select(1))
        except Exception:
            return False
        return True

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
        """One transaction (committed on exit), with connection errors mapped."""
        reader, writer = self._engines()
        try:
            async with (writer if write else reader).begin() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"The database is unavailable: {type(exc).__name__}: {exc}") from exc

    # -- generations ----------------------------------------------------------------------

    async def insert(self, row: GenerationRow, deliveries: Iterable[DeliveryRow] = ()) -> None:
        values = _columns({k: getattr(row, k) for k in GENERATION_FIELDS if k != "id"})
        async with self._tx() as conn:
            await conn.execute(insert(g).values(id=row.id, **values))
            await insert_deliveries(conn, deliveries)

    async def insert_queued(self, row: GenerationRow, deliveries: Iterable[DeliveryRow] = ()) -> GenerationRow:
        async with self._tx() as conn:
            await self._dispatch_lock(conn)
            ahead = await conn.execute(select(func.count()).select_from(g).where(
                g.c.tool_id == row.tool_id, g.c.status == "queued", g.c.dispatched_at.is_(None),
                or_(g.c.created_at < row.created_at, and_(g.c.created_at == row.created_at, g.c.id < row.id))))
            row.queue_position = int(ahead.scalar_one()) + 1
            values = _columns({k: getattr(row, k) for k in GENERATION_FIELDS if k != "id"})
            await conn.execute(insert(g).values(id=row.id, **values))
            await insert_deliveries(conn, deliveries)
        return row

    async def _dispatch_lock(self, conn: AsyncConnection) -> None:
        """Serialise with every claimer: PostgreSQL's advisory lock (released at commit);
        on SQLite the write transaction's ``BEGIN IMMEDIATE`` is the lock already."""
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DISPATCH_LOCK})

    async def get(self, gen_id: str) -> GenerationRow | None:
        async with self._tx(write=False) as conn:
            found = (await conn.execute(select(g).where(g.c.id == gen_id))).mappings().first()
        return _generation(found) if found else None

    async def list_for_user(self, user_id: str, *, limit: int, status: str | None = None,
                            before: tuple[float, str] | None = None) -> list[GenerationRow]:
        query = select(g).where(g.c.user_id == user_id)
        if status:
            query = query.where(g.c.status == status)
        if before:
            created_at, gen_id = before
            query = query.where(or_(g.c.created_at < created_at, and_(g.c.created_at == created_at, g.c.id < gen_id)))
        query = query.order_by(g.c.created_at.desc(), g.c.id.desc()).limit(limit)
        async with self._tx(write=False) as conn:
            return [_generation(r) for r in (await conn.execute(query)).mappings()]

    async def count_queued(self, user_id: str) -> int:
        query = select(func.count()).select_from(g).where(g.c.user_id == user_id, g.c.status == "queued")
        async with self._tx(write=False) as conn:
            return int((await conn.execute(query)).scalar_one())

    async def unfinished(self) -> list[GenerationRow]:
        query = select(g).where(g.c.status.in_(sorted(UNFINISHED_STATUSES))).order_by(g.c.created_at, g.c.id)
        async with self._tx(write=False) as conn:
            return [_generation(r) for r in (await conn.execute(query)).mappings()]

    async def update(self, gen_id: str, **fields: Any) -> GenerationRow | None:
        values = _columns(fields)
        values.setdefault("updated_at", time.time())
        async with self._tx() as conn:
            found = (await conn.execute(update(g).where(g.c.id == gen_id).values(**values).returning(*g.c))).mappings()
            row = found.first()
        return _generation(row) if row else None

    async def transition(self, gen_id: str, from_statuses: Iterable[str], to_status: str, *,
                         expect_attempt: int | None = None, deliveries: Iterable[DeliveryRow] = (),
                         **fields: Any) -> GenerationRow | None:
        values = _columns(fields)
        values["status"] = to_status
        values.setdefault("updated_at", time.time())
        # The whole guarantee is this one statement: the database applies the WHERE and
        # the SET atomically, so of N racing callers exactly one matches the old status.
        where = [g.c.id == gen_id, g.c.status.in_(sorted(set(from_statuses)))]
        if expect_attempt is not None:
            where.append(g.c.attempt == expect_attempt)  # the fence of a run's writes
        statement = update(g).where(*where).values(**values).returning(*g.c)
        async with self._tx() as conn:
            row = (await conn.execute(statement)).mappings().first()
            if row is not None:  # the webhooks of the transition commit with it (an outbox)
                await insert_deliveries(conn, deliveries)
        return _generation(row) if row else None

    async def claim_dispatchable(self, max_per_user: int, tool_limits: dict[str, int], now: float,
                                 owner: str, *, tool_share: float = 1.0) -> list[GenerationRow]:
        active = and_(g.c.status.in_(sorted(UNFINISHED_STATUSES)),
                      or_(g.c.status == "running", g.c.dispatched_at.is_not(None)))
        async with self._tx() as conn:
            if self.dialect == "postgresql":
                # Claimers queue here; each then counts what the previous ones committed
                # (READ COMMITTED takes a fresh snapshot per statement).
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DISPATCH_LOCK})
            per_user: dict[str, int] = {
                user: count for user, count in
                await conn.execute(select(g.c.user_id, func.count()).where(active).group_by(g.c.user_id))}
            per_tool: dict[str, int] = {
                tool: count for tool, count in
                await conn.execute(select(g.c.tool_id, func.count()).where(active).group_by(g.c.tool_id))}
            per_pair: dict[tuple[str, str], int] = {
                (user, tool): count for user, tool, count in
                await conn.execute(select(g.c.user_id, g.c.tool_id, func.count()).where(active)
                                   .group_by(g.c.user_id, g.c.tool_id))}
            candidates = await conn.execute(
                select(g.c.id, g.c.user_id, g.c.tool_id)
                .where(g.c.status == "queued", g.c.dispatched_at.is_(None))
                .order_by(g.c.created_at, g.c.id).limit(self.claim_scan))
            rows = list(candidates)
            waiting: dict[str, set[str]] = {}  # tool -> users with a run waiting for it
            for _gen_id, user, tool in rows:
                waiting.setdefault(tool, set()).add(user)
            picked: list[str] = []
            for gen_id, user, tool in rows:
                limit = tool_limits.get(tool)
                if limit is None or per_user.get(user, 0) >= max_per_user or per_tool.get(tool, 0) >= limit:
                    continue  # later rows of this user/tool cannot fit either: FIFO holds
                if (per_pair.get((user, tool), 0) >= max(1, math.ceil(tool_share * limit))
                        and waiting[tool] - {user}):
                    continue  # fair use: over their share while another user waits for the tool
                picked.append(gen_id)
                per_pair[(user, tool)] = per_pair.get((user, tool), 0) + 1
                per_user[user] = per_user.get(user, 0) + 1
                per_tool[tool] = per_tool.get(tool, 0) + 1
            if not picked:
                return []
            claimed = (await conn.execute(
                update(g).where(g.c.id.in_(picked), g.c.status == "queued", g.c.dispatched_at.is_(None))
                .values(dispatched_at=now, owner=owner, updated_at=now).returning(*g.c))).mappings().all()
        order = {gen_id: i for i, gen_id in enumerate(picked)}
        return sorted((_generation(r) for r in claimed), key=lambda row: order[row.id])

    async def queue_position(self, gen_id: str) -> int | None:
        async with self._tx(write=False) as conn:
            row = (await conn.execute(select(g.c.tool_id, g.c.created_at, g.c.status, g.c.dispatched_at)
                                      .where(g.c.id == gen_id))).first()
            if row is None or row.status != "queued" or row.dispatched_at is not None:
                return None
            ahead = await conn.execute(
                select(func.count()).select_from(g).where(
                    g.c.tool_id == row.tool_id, g.c.status == "queued", g.c.dispatched_at.is_(None),
                    or_(g.c.created_at < row.created_at, and_(g.c.created_at == row.created_at, g.c.id < gen_id))))
            return int(ahead.scalar_one())

    async def expired(self, now: float, *, retry_after: float, limit: int) -> list[GenerationRow]:
        query = (select(g).where(g.c.status.in_(sorted(UNFINISHED_STATUSES)), g.c.deadline_at <= now,
                                 or_(g.c.cancel_requested_at.is_(None), g.c.cancel_requested_at < now - retry_after))
                 .order_by(g.c.deadline_at).limit(limit))
        async with self._tx(write=False) as conn:
            return [_generation(r) for r in (await conn.execute(query)).mappings()]

    async def refresh_queue_positions(self, *, limit: int) -> list[GenerationRow]:
        async with self._tx() as conn:
            # The claimers' lock: positions are computed against committed claims only,
            # and two processes never publish conflicting positions.
            await self._dispatch_lock(conn)
            rows = await conn.execute(
                select(g.c.id, g.c.tool_id, g.c.queue_position)
                .where(g.c.status == "queued", g.c.dispatched_at.is_(None))
                .order_by(g.c.created_at, g.c.id).limit(self.claim_scan))
            counts: dict[str, int] = {}
            changed: list[tuple[int, str]] = []
            for gen_id, tool, saved in rows:
                position = counts[tool] = counts.get(tool, 0) + 1
                if saved != position:
                    changed.append((position, gen_id))
            changed.sort()  # the front of every queue first: those positions matter most
            updated: list[GenerationRow] = []
            for position, gen_id in changed[:limit]:
                found = (await conn.execute(
                    update(g).where(g.c.id == gen_id, g.c.status == "queued", g.c.dispatched_at.is_(None))
                    .values(queue_position=position).returning(*g.c))).mappings().first()
                if found is not None:
                    updated.append(_generation(found))
        return updated

    async def recent_durations(self, tool_id: str, limit: int) -> list[float]:
        query = (select(g.c.finished_at - g.c.started_at)
                 .where(g.c.tool_id == tool_id, g.c.status == "completed", g.c.started_at.is_not(None),
                        g.c.finished_at.is_not(None))
                 .order_by(g.c.finished_at.desc()).limit(limit))
        async with self._tx(write=False) as conn:
            return [float(d) for d in (await conn.execute(query)).scalars()]

    async def delete_finished_before(self, ts: float, batch: int) -> int:
        async with self._tx() as conn:
            ids = list((await conn.execute(
                select(g.c.id).where(g.c.status.in_(sorted(FINAL_STATUSES)), g.c.finished_at < ts)
                .order_by(g.c.finished_at).limit(batch))).scalars())
            if not ids:
                return 0
            output_ids = list((await conn.execute(select(o.c.id).where(o.c.generation_id.in_(ids)))).scalars())
            if output_ids:
                # Explicit, not only ON DELETE CASCADE: SQLite enforces foreign keys only
                # on connections that enabled them.
                await conn.execute(delete(c).where(c.c.output_id.in_(output_ids)))
                await conn.execute(delete(o).where(o.c.id.in_(output_ids)))
            await delete_deliveries(conn, ids)
            await conn.execute(delete(g).where(g.c.id.in_(ids), g.c.status.in_(sorted(FINAL_STATUSES))))
        return len(ids)

    # -- outputs --------------------------------------------------------------------------

    async def insert_output(self, row: OutputRow) -> None:
        async with self._tx() as conn:
            await conn.execute(insert(o).values(**vars(row)))

    async def write_output(self, row: OutputRow, chunks: AsyncIterator[bytes] | bytes) -> OutputRow:
        if isinstance(chunks, (bytes, bytearray)) and len(chunks) > self.max_output_bytes:
            raise self._too_large()
        try:
            total = await self._write_chunks(row, _rechunk(chunks, self.chunk_size), insert_row=True)
        except BaseException:  # cancellation too: nothing partial stays behind
            await self._discard(row.id)
            raise
        row.size_bytes = total
        return row

    async def _write_chunks(self, row: OutputRow, source: AsyncIterator[bytes], *, insert_row: bool) -> int:
        """Chunks one short transaction each (a slow producer must not hold the SQLite
        write lock). One chunk of look-ahead: the transaction of the last chunk also
        stores the final size, so a one-chunk output is a single transaction."""
        total, seq = 0, 0
        current = await anext(source, None)
        if current is None and insert_row:
            async with self._tx() as conn:
                await conn.execute(insert(o).values(**{**vars(row), "size_bytes": 0}))
        while current is not None:
            total += len(current)
            if total > self.max_output_bytes:
                raise self._too_large()
            following = await anext(source, None)
            size = total if following is None else _WRITING
            async with self._tx() as conn:
                if seq == 0 and insert_row:
                    await conn.execute(insert(o).values(**{**vars(row), "size_bytes": size}))
                elif following is None:
                    await conn.execute(update(o).where(o.c.id == row.id).values(size_bytes=size))
                await conn.execute(insert(c).values(output_id=row.id, seq=seq, data=current))
            seq, current = seq + 1, following
        return total

    def _too_large(self) -> OutputTooLarge:
        return OutputTooLarge(f"The output exceeds the limit of {self.max_output_bytes} bytes",
                              limit=self.max_output_bytes)

    async def _discard(self, output_id: str) -> None:
        """Remove a partial output; if the database is gone too, retention removes the
        (invisible, ``size_bytes = -1``) row with its generation later."""
        try:
            async with self._tx() as conn:
                await conn.execute(delete(c).where(c.c.output_id == output_id))
                await conn.execute(delete(o).where(o.c.id == output_id))
        except StoreUnavailable:
            log.warning("could not remove a partial output", extra={"output_id": output_id})

    async def read_output(self, output_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is None:
            found = await self.output(output_id)
            if found is None:
                return
            end = found.size_bytes
        size = self.chunk_size
        if start < 0 or start >= end:
            return
        seq, last = start // size, (end - 1) // size
        while seq <= last:
            # A few chunks per query and no connection held between yields: a slow HTTP
            # client must not pin a pooled connection (nor a SQLite read snapshot).
            query = (select(c.c.seq, c.c.data)
                     .where(c.c.output_id == output_id, c.c.seq >= seq, c.c.seq <= min(last, seq + self.read_batch - 1))
                     .order_by(c.c.seq))
            async with self._tx(write=False) as conn:
                rows = (await conn.execute(query)).all()
            for chunk_seq, data in rows:
                if chunk_seq != seq:
                    return  # deleted under us: stop rather than serve bytes from the wrong offset
                offset = seq * size
                yield bytes(data[max(0, start - offset):min(len(data), end - offset)])
                seq += 1
            if not rows:
                return

    async def outputs(self, ids: list[str]) -> list[OutputRow]:
        if not ids:
            return []
        async with self._tx(write=False) as conn:
            found = {r["id"]: _output(r) for r in (await conn.execute(
                select(o).where(o.c.id.in_(ids), o.c.size_bytes >= 0))).mappings()}
        return [found[i] for i in ids if i in found]

    async def output(self, output_id: str) -> OutputRow | None:
        async with self._tx(write=False) as conn:
            found = (await conn.execute(
                select(o).where(o.c.id == output_id, o.c.size_bytes >= 0))).mappings().first()
        return _output(found) if found else None

    # -- the files of the releases before output_chunks --------------------------------------

    async def _import_legacy_outputs(self, directory: Path) -> int:
        """Copy ``<dir>/xx/out_<hex>`` files of known outputs into ``output_chunks``, once:
        each file in one transaction (delete, then insert its chunks, so an interrupted
        import simply runs again), then a marker file. The files themselves are left."""
        marker = directory / _LEGACY_MARKER
        if not directory.is_dir() or marker.exists():
            return 0
        imported = 0
        for path in sorted(directory.glob("??/out_*")):
            if not _LEGACY_OUTPUT.match(path.name) or not path.is_file():
                continue
            async with self._tx() as conn:
                known = (await conn.execute(select(o.c.id).where(o.c.id == path.name))).first()
                if known is None:
                    continue  # a file without its record (a crash between the two writes)
                await conn.execute(delete(c).where(c.c.output_id == path.name))
                total, seq = 0, 0
                async for piece in _file_chunks(path, self.chunk_size):
                    await conn.execute(insert(c).values(output_id=path.name, seq=seq, data=piece))
                    total, seq = total + len(piece), seq + 1
                await conn.execute(update(o).where(o.c.id == path.name).values(size_bytes=total))
            imported += 1
        await asyncio.to_thread(marker.write_text, "output files copied into the database's output_chunks\n")
        log.info("imported %d legacy output files into the database", imported)
        return imported


if TYPE_CHECKING:
    from livegate.store.base import Store

    def _implements_the_interface(store: SqlStore) -> Store:
        return store  # mypy checks SqlStore against the Store protocol here
