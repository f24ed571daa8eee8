"""Durable generations and outputs, shared by every process of a product.

* :mod:`livegate.store.base` — the :class:`Store` interface and its row types;
* :mod:`livegate.store.sql` — :class:`SqlStore`, the one implementation (SQLAlchemy 2 Core,
  async): SQLite by default, PostgreSQL with ``LIVEGATE_DATABASE_URL``;
* :mod:`livegate.store.schema` — the tables; ``migrations/`` — their Alembic history,
  applied by :mod:`livegate.store.migrate`.
"""

from livegate.store.base import (
    CHUNK_SIZE,
    FINAL_STATUSES,
    UNFINISHED_STATUSES,
    DeliveryRow,
    GenerationRow,
    OutputRow,
    Store,
    decode_cursor,
    encode_cursor,
)
from livegate.store.sql import DEFAULT_MAX_OUTPUT_BYTES, SqlStore, normalize_url, sqlite_url

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "FINAL_STATUSES",
    "UNFINISHED_STATUSES",
    "DeliveryRow",
    "GenerationRow",
    "OutputRow",
    "SqlStore",
    "Store",
    "decode_cursor",
    "encode_cursor",
    "normalize_url",
    "sqlite_url",
]
