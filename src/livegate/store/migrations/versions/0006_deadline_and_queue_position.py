"""``generations.deadline_at`` and ``generations.queue_position`` (issue 13, run control).

``deadline_at``: when a run still queued or running is cancelled with ``deadline_exceeded``
(openapi.yaml ``CreateGenerationRequest.cancelAfterSeconds``); every process's dispatch
tick sweeps the expired ones. ``queue_position``: the last position published for the run
(its place among the queued runs of its tool, or in ComfyUI's remote queue), so that of
all the processes that recompute positions only one publishes each change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("deadline_at", sa.Double, nullable=True))
    op.add_column("generations", sa.Column("queue_position", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("queue_position")
        batch.drop_column("deadline_at")
