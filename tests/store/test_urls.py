"""Which driver a configured URL ends up on, and which database a config selects."""

from __future__ import annotations

from pathlib import Path

import pytest

from livegate.config import Config
from livegate.store import SqlStore, normalize_url


@pytest.mark.parametrize(("given", "used"), [
    ("postgresql://u:p@db:5432/lg", "postgresql+psycopg://u:p@db:5432/lg"),
    ("postgres://u@db/lg", "postgresql+psycopg://u@db/lg"),
    ("postgresql+psycopg://u@db/lg", "postgresql+psycopg://u@db/lg"),
    ("sqlite:///var/lg.sqlite3", "sqlite+aiosqlite:///var/lg.sqlite3"),
    ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
])
def test_urls_are_pinned_to_the_async_drivers(given: str, used: str) -> None:
    assert normalize_url(given) == used


def test_the_config_picks_postgres_when_a_url_is_set_and_sqlite_under_the_data_dir_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LIVEGATE_DATABASE_URL", "LIVEGATE_MAX_OUTPUT_BYTES", "LIVEGATE_RETENTION_DAYS",
                 "LIVEGATE_RETENTION_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEGATE_DATA_DIR", str(tmp_path))
    config = Config.from_env()
    assert (config.max_output_bytes, config.retention_days, config.retention_interval_seconds) == (
        256 * 1024 * 1024, 30.0, 3600.0)
    embedded = SqlStore.from_config(config)
    assert embedded.url == f"sqlite+aiosqlite:///{tmp_path}/livegate.sqlite3"
    assert embedded.legacy_outputs_dir == tmp_path / "outputs"
    monkeypatch.setenv("LIVEGATE_DATABASE_URL", "postgresql://lg:secret@db:5432/lg")
    monkeypatch.setenv("LIVEGATE_MAX_OUTPUT_BYTES", "1000")
    shared = SqlStore.from_config(Config.from_env())
    assert shared.url == "postgresql+psycopg://lg:secret@db:5432/lg" and shared.max_output_bytes == 1000
    assert shared.legacy_outputs_dir is None
    assert "secret" not in repr(shared)
