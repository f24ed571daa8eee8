"""Job-engine columns on ``generations``; output bytes in the database (``output_chunks``).

Every new column is nullable or has a default, so rows of revision 1 stay valid and a
process of the previous release can still read the table while this one rolls out.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy): SQLite adds nullable or constant-default columns
    # in place, so a large legacy table is not rewritten.
    op.add_column("generations", sa.Column("dispatched_at", sa.Double, nullable=True))
    op.add_column("generations", sa.Column("job_id", sa.Text, nullable=True))
    op.add_column("generations", sa.Column("attempt", sa.Integer, nullable=False, server_default="0"))
    op.add_column("generations", sa.Column("request_sent_at", sa.Double, nullable=True))
    op.add_column("generations", sa.Column("cancel_requested_at", sa.Double, nullable=True))
    op.add_column("generations", sa.Column("owner", sa.Text, nullable=True))
    op.create_index("generations_finished", "generations", ["finished_at"])
    op.create_index("outputs_by_generation", "outputs", ["generation_id"])
    op.create_table(
        "output_chunks",
        sa.Column("output_id", sa.Text, sa.ForeignKey("outputs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("output_chunks")
    op.drop_index("outputs_by_generation", "outputs")
    op.drop_index("generations_finished", "generations")
    with op.batch_alter_table("generations") as batch:
        for name in ("owner", "cancel_requested_at", "request_sent_at", "attempt", "job_id", "dispatched_at"):
            batch.drop_column(name)
