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
    finished_at REAL
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
                "started_at, finished_at")
_OUT_COLUMNS = ("id, user_id, generation_id, kind, media_type, size_bytes, filename, width, height, "
                "duration_seconds, text, created_at")


def _gen(row: Any) -> GenerationRow:
    return GenerationRow(
        id=row[0], user_id=row[1], tool_id=row[2], status=row[3], inputs=json.loads(row[4]),
        output_ids=json.loads(row[5]), error=json.loads(row[6]) if row[6] else None, upstream_ref=row[7],
        created_at=row[8], updated_at=row[9], started_at=row[10], finished_at=row[11],
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
            f"INSERT INTO generations ({_GEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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

    async def get(self, gen_id: str) -> GenerationRow | None:
        async with self.db.execute(f"SELECT {_GEN_COLUMNS} FROM generations WHERE id=?", (gen_id,)) as cur:
            row = await cur.fetchone()
        return _gen(row) if row else None

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
        async with self.db.execute(sql, args) as cur:
            return [_gen(r) for r in await cur.fetchall()]

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
