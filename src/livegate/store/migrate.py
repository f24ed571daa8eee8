"""Schema migrations with Alembic, run on a connection the store already holds.

``upgrade(conn)`` brings a database to the newest revision inside the caller's
transaction:

* on PostgreSQL it first takes a transaction-scoped advisory lock, so processes starting
  together migrate one after the other (the second finds nothing to do);
* on SQLite the caller's transaction is ``BEGIN IMMEDIATE`` (the write lock) already;
* a database made by the releases before Alembic (``generations`` present, no
  ``alembic_version``) is stamped at revision ``0001`` — which is exactly that schema —
  and then upgraded, so no row is touched.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

__all__ = ["LEGACY_REVISION", "MIGRATIONS_DIR", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
LEGACY_REVISION = "0001"
# Any constant shared by every livegate process; distinct from the dispatch lock's.
_MIGRATION_LOCK = 0x6C67_6D69  # "lgmi"


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database (``None``: not migrated, or legacy)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> str | None:
    """Migrate to ``revision`` in the connection's transaction; the revision after."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    config = _config(connection)
    tables = set(inspect(connection).get_table_names())
    if "generations" in tables and "alembic_version" not in tables:
        command.stamp(config, LEGACY_REVISION)
    command.upgrade(config, revision)
    return current_revision(connection)
