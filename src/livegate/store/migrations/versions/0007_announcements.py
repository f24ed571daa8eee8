"""``generations.announced_at`` and ``generations.announce_lease_until`` (issue 14): a
durable outbox of run ends.

A run's end is recorded first and published on the bus second; ``announced_at`` is set
once its terminal ``generationUpdate`` was published, so an end whose publish failed (bus
down) or never happened (the process was killed between the two steps) stays findable:
every process's sweep republishes final rows left unannounced past a grace period, taking
``announce_lease_until`` first so that two processes rarely republish the same end.

Backfill: every final row already present counts as announced — an upgrade must not
republish history (``announced_at = finished_at``, or ``updated_at`` where a row has no
``finished_at``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNANNOUNCED = sa.text("announced_at IS NULL AND status IN ('cancelled', 'completed', 'failed')")


def upgrade() -> None:
    op.add_column("generations", sa.Column("announced_at", sa.Double, nullable=True))
    op.add_column("generations", sa.Column("announce_lease_until", sa.Double, nullable=True))
    op.execute("UPDATE generations SET announced_at = COALESCE(finished_at, updated_at) "
               "WHERE status IN ('cancelled', 'completed', 'failed')")
    op.create_index("generations_unannounced", "generations", ["finished_at"],
                    sqlite_where=_UNANNOUNCED, postgresql_where=_UNANNOUNCED)


def downgrade() -> None:
    op.drop_index("generations_unannounced", "generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("announce_lease_until")
        batch.drop_column("announced_at")
