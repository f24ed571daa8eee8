"""Alembic environment of the livegate store.

The store runs migrations itself (``SqlStore.open``, ``livegate db upgrade``) and hands
Alembic an open connection inside its own transaction (``config.attributes["connection"]``),
so the migration, the legacy-file stamp and the lock that serialises concurrent starts
share one transaction. Running the ``alembic`` command line against this directory needs
``sqlalchemy.url`` in its config.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from livegate.store.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place: let autogenerate emit batch operations.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
