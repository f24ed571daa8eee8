"""Webhooks: a generation's own ``webhook_url`` / ``webhook_events`` and the
``webhook_deliveries`` table (openapi.yaml ``listGenerationWebhooks``).

A delivery row is inserted in the same transaction as the lifecycle transition it reports
(a transactional outbox), and is the queue itself: every process's delivery sweeper claims
due rows with a lease (``lease_until`` / ``lease_owner``), see docs/scaling.md.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.add_column("generations", sa.Column("webhook_url", sa.Text, nullable=True))
    op.add_column("generations", sa.Column("webhook_events", sa.Text, nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("generation_id", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("next_attempt_at", sa.Double),
        sa.Column("lease_until", sa.Double),
        sa.Column("lease_owner", sa.Text),
        sa.Column("last_attempt_at", sa.Double),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Double),
    )
    op.create_index("webhook_deliveries_by_generation", "webhook_deliveries", ["generation_id"])
    op.create_index("webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    sqlite_where=_PENDING, postgresql_where=_PENDING)


def downgrade() -> None:
    op.drop_index("webhook_deliveries_due", "webhook_deliveries")
    op.drop_index("webhook_deliveries_by_generation", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("webhook_events")
        batch.drop_column("webhook_url")
