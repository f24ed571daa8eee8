"""Durable generation and output records in SQLite (aiosqlite), under the data directory.

Writes happen on transitions (a handful per run), never per progress tick.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    tool_id TEXT NOT NULL,
    status TEXT NOT NULL,
    inputs TEXT NOT NULL,
    output_ids TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    upstream_ref TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    dispatched_at REAL,
    job_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    request_sent_at REAL,
    cancel_requested_at REAL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS generations_by_user ON generations (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS generations_unfinished ON generations (status) WHERE status IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS outputs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    generation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    filename TEXT,
    width INTEGER,
    height INTEGER,
    duration_seconds REAL,
    text TEXT,
    created_at REAL NOT NULL
);
"""


@dataclass
class GenerationRow:
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


@dataclass
class OutputRow:
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


_GEN_COLUMNS = ("id, user_id, tool_id, status, inputs, output_ids, error, upstream_ref, created_at, updated_at, "
                "started_at, finished_at, dispatched_at, job_id, attempt, request_sent_at, cancel_requested_at, owner")
_JSON_FIELDS = {"inputs", "output_ids", "error"}
_OUT_COLUMNS = ("id, user_id, generation_id, kind, media_type, size_bytes, filename, width, height, "
                "duration_seconds, text, created_at")


def _gen(row: Any) -> GenerationRow:
    return GenerationRow(
        id=row[0], user_id=row[1], tool_id=row[2], status=row[3], inputs=json.loads(row[4]),
        output_ids=json.loads(row[5]), error=json.loads(row[6]) if row[6] else None, upstream_ref=row[7],
        created_at=row[8], updated_at=row[9], started_at=row[10], finished_at=row[11],
        dispatched_at=row[12], job_id=row[13], attempt=row[14], request_sent_at=row[15],
        cancel_requested_at=row[16], owner=row[17],
    )


def encode_cursor(row: GenerationRow) -> str:
    return base64.urlsafe_b64encode(json.dumps([row.created_at, row.id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raise ``ValueError`` on anything that is not one of our cursors."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created_at, gen_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(created_at, (int, float)) or not isinstance(gen_id, str):
        raise ValueError("bad cursor")
    return float(created_at), gen_id


class GenerationStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        import asyncio

        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def healthy(self) -> bool:
        try:
            async with self.db.execute("SELECT 1") as cur:
                return (await cur.fetchone()) is not None
        except Exception:
            return False

    async def insert(self, row: GenerationRow) -> None:
        await self.db.execute(
            "INSERT INTO generations (id, user_id, tool_id, status, inputs, output_ids, error, upstream_ref, "
            "created_at, updated_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (row.id, row.user_id, row.tool_id, row.status, json.dumps(row.inputs), json.dumps(row.output_ids),
             json.dumps(row.error) if row.error else None, row.upstream_ref, row.created_at, row.updated_at,
             row.started_at, row.finished_at),
        )
        await self.db.commit()

    async def save(self, row: GenerationRow) -> None:
        row.updated_at = time.time()
        await self.db.execute(
            "UPDATE generations SET status=?, output_ids=?, error=?, upstream_ref=?, updated_at=?, started_at=?, "
            "finished_at=? WHERE id=?",
            (row.status, json.dumps(row.output_ids), json.dumps(row.error) if row.error else None, row.upstream_ref,
             row.updated_at, row.started_at, row.finished_at, row.id),
        )
        await self.db.commit()

    async def update(self, gen_id: str, **fields: Any) -> None:
        await self.transition(gen_id, None, None, **fields)

    async def transition(self, gen_id: str, from_statuses: set[str] | None, to_status: str | None, *,
                         expect_attempt: int | None = None, **fields: Any) -> GenerationRow | None:
        values = dict(fields)
        if to_status is not None:
            values["status"] = to_status
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in values)
        args: list[Any] = [json.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in values.items()]
        sql = f"UPDATE generations SET {sets} WHERE id=?"
        args.append(gen_id)
        if from_statuses is not None:
            sql += f" AND status IN ({','.join('?' * len(from_statuses))})"
            args += sorted(from_statuses)
        if expect_attempt is not None:
            sql += " AND attempt=?"
            args.append(expect_attempt)
        sql += f" RETURNING {_GEN_COLUMNS}"
        async with self._lock:
            rows = list(await self.db.execute_fetchall(sql, args))
            await self.db.commit()
        row = rows[0] if rows else None
        return _gen(row) if row else None

    async def claim_dispatchable(self, max_per_user: int, tool_limits: dict[str, int], now: float,
                                 owner: str) -> list[GenerationRow]:
        async with self.db.execute(
            f"SELECT {_GEN_COLUMNS} FROM generations WHERE status IN ('queued','running') ORDER BY created_at, id"
        ) as cur:
            rows = [_gen(r) for r in await cur.fetchall()]
        by_user: dict[str, int] = {}
        by_tool: dict[str, int] = {}
        for r in rows:
            if r.status == "running" or r.dispatched_at is not None:
                by_user[r.user_id] = by_user.get(r.user_id, 0) + 1
                by_tool[r.tool_id] = by_tool.get(r.tool_id, 0) + 1
        claimed = []
        for r in rows:
            if r.status != "queued" or r.dispatched_at is not None or r.tool_id not in tool_limits:
                continue
            if by_user.get(r.user_id, 0) >= max_per_user or by_tool.get(r.tool_id, 0) >= tool_limits[r.tool_id]:
                continue
            won = await self.transition(r.id, {"queued"}, "queued", dispatched_at=now, owner=owner)
            if won is not None and won.dispatched_at == now:
                by_user[r.user_id] = by_user.get(r.user_id, 0) + 1
                by_tool[r.tool_id] = by_tool.get(r.tool_id, 0) + 1
                claimed.append(won)
        return claimed

    async def get(self, gen_id: str) -> GenerationRow | None:
        rows = list(await self.db.execute_fetchall(f"SELECT {_GEN_COLUMNS} FROM generations WHERE id=?", (gen_id,)))
        return _gen(rows[0]) if rows else None

    async def list_for_user(self, user_id: str, *, limit: int, status: str | None,
                            before: tuple[float, str] | None) -> list[GenerationRow]:
        sql = f"SELECT {_GEN_COLUMNS} FROM generations WHERE user_id=?"
        args: list[Any] = [user_id]
        if status:
            sql += " AND status=?"
            args.append(status)
        if before:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return [_gen(r) for r in await self.db.execute_fetchall(sql, args)]

    async def unfinished(self) -> list[GenerationRow]:
        async with self.db.execute(
            f"SELECT {_GEN_COLUMNS} FROM generations WHERE status IN ('queued','running') ORDER BY created_at"
        ) as cur:
            return [_gen(r) for r in await cur.fetchall()]

    async def insert_output(self, row: OutputRow) -> None:
        await self.db.execute(
            f"INSERT INTO outputs ({_OUT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (row.id, row.user_id, row.generation_id, row.kind, row.media_type, row.size_bytes, row.filename,
             row.width, row.height, row.duration_seconds, row.text, row.created_at),
        )
        await self.db.commit()

    async def outputs(self, ids: list[str]) -> list[OutputRow]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        async with self.db.execute(f"SELECT {_OUT_COLUMNS} FROM outputs WHERE id IN ({marks})", ids) as cur:
            found = {r[0]: OutputRow(*r) for r in await cur.fetchall()}
        return [found[i] for i in ids if i in found]

    async def output(self, output_id: str) -> OutputRow | None:
        async with self.db.execute(f"SELECT {_OUT_COLUMNS} FROM outputs WHERE id=?", (output_id,)) as cur:
            row = await cur.fetchone()
        return OutputRow(*row) if row else None
