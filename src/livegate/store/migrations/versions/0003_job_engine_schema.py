"""The job engine's tables on PostgreSQL: procrastinate's schema (``service/jobs.py``).

procrastinate ships its whole schema as one SQL file for a fresh database; applying it
here, under the migration lock every starting process takes, keeps "one command migrates
everything" (``livegate db upgrade`` or the start of any process). SQLite has no job
tables: the embedded default runs procrastinate on its in-memory connector. A database
where procrastinate's schema was applied by hand is left as it is.

A later procrastinate release with schema changes needs a revision of ours that applies
its migration files (``procrastinate/sql/migrations``); ``pyproject.toml`` pins the
compatible range for that reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from procrastinate.schema import SchemaManager

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    present = bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").scalar()
    if not present:
        # exec_driver_sql: no SQLAlchemy bind-parameter parsing of the file's '::' casts; the
        # driver still reads '%' as a placeholder, hence the doubling.
        bind.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in ("procrastinate_events", "procrastinate_periodic_defers", "procrastinate_jobs",
                  "procrastinate_workers"):
        bind.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")
    bind.exec_driver_sql("DROP TYPE IF EXISTS procrastinate_job_status, procrastinate_job_event_type, "
                         "procrastinate_job_to_defer_v1 CASCADE")
