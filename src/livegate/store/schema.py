"""The store's tables as SQLAlchemy Core ``Table`` objects: the schema at the newest
migration (``migrations/versions``). The migrations are the history and are never derived
from this file; ``tests/store`` checks that a migrated database matches it.

Types are chosen to mean the same on both dialects: JSON documents are ``TEXT`` (as the
first schema had them), timestamps are Unix seconds in ``DOUBLE``/``REAL``, bytes are
``BLOB``/``BYTEA``.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)

__all__ = ["generations", "metadata", "output_chunks", "outputs", "webhook_deliveries"]

metadata = MetaData()

_UNFINISHED = text("status IN ('queued', 'running')")
_UNANNOUNCED = text("announced_at IS NULL AND status IN ('cancelled', 'completed', 'failed')")

generations = Table(
    "generations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("tool_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("output_ids", Text, nullable=False, server_default="[]"),
    Column("error", Text),
    Column("upstream_ref", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    # revision 2: the job engine's columns
    Column("dispatched_at", Double),
    Column("job_id", Text),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("request_sent_at", Double),
    Column("cancel_requested_at", Double),
    Column("owner", Text),
    Column("progress", Text),  # revision 4: JSON progress snapshot of a running generation
    Column("webhook_url", Text),  # revision 0005: the generation's own webhook
    Column("webhook_events", Text),  # JSON list of statuses sent to webhook_url
    # revision 0006 (run control): the deadline, and the last queue position published
    Column("deadline_at", Double),
    Column("queue_position", Integer),
    # revision 0007 (the outbox of run ends): when the terminal generationUpdate was
    # published, and the lease of the process republishing it
    Column("announced_at", Double),
    Column("announce_lease_until", Double),
    Index("generations_by_user", "user_id", text("created_at DESC"), text("id DESC")),
    Index("generations_unfinished", "status", sqlite_where=_UNFINISHED, postgresql_where=_UNFINISHED),
    Index("generations_finished", "finished_at"),
    Index("generations_unannounced", "finished_at", sqlite_where=_UNANNOUNCED, postgresql_where=_UNANNOUNCED),
)

outputs = Table(
    "outputs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("generation_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("media_type", Text, nullable=False),
    # -1 while the bytes are being written (see SqlStore.write_output): such rows are never
    # served, and a crash mid-write leaves one that retention removes with its generation.
    Column("size_bytes", Integer, nullable=False),
    Column("filename", Text),
    Column("width", Integer),
    Column("height", Integer),
    Column("duration_seconds", Double),
    Column("text", Text),
    Column("created_at", Double, nullable=False),
    Index("outputs_by_generation", "generation_id"),
)

output_chunks = Table(
    "output_chunks",
    metadata,
    Column("output_id", Text, ForeignKey("outputs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

_PENDING = text("status = 'pending'")

webhook_deliveries = Table(
    "webhook_deliveries",  # revision 0005: one row per (generation, status, endpoint)
    metadata,
    Column("id", Text, primary_key=True),  # the webhook-id
    Column("generation_id", Text, nullable=False),
    Column("event", Text, nullable=False),  # the lifecycle status reported
    Column("endpoint", Text, nullable=False),
    Column("url", Text),  # the generation's own webhook_url (deployment endpoints: from config)
    Column("status", Text, nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
    Column("next_attempt_at", Double),
    Column("lease_until", Double),
    Column("lease_owner", Text),
    Column("last_attempt_at", Double),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("delivered_at", Double),
    Index("webhook_deliveries_by_generation", "generation_id"),
    Index("webhook_deliveries_due", "next_attempt_at", sqlite_where=_PENDING, postgresql_where=_PENDING),
)
