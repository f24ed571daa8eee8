"""The transport limits' settings: checked at start, and the connection cap kept under the
process's file-descriptor limit (livegate.server.transport_limits)."""

from __future__ import annotations

import logging
import resource

import pytest

from livegate.config import Config
from livegate.server import RESERVED_FDS, transport_limits
from livegate.testing.gateway import TEST_SECRET, TEST_SERVICE_TOKEN


def _config(**overrides: object) -> Config:
    return Config(jwt_secret=TEST_SECRET, service_token=TEST_SERVICE_TOKEN, **overrides)  # type: ignore[arg-type]


def test_the_defaults_serve_and_out_of_range_limits_are_refused_by_name() -> None:
    assert _config().problems() == []
    bad = _config(idle_timeout_seconds=0, header_timeout_seconds=-1, body_timeout_seconds=0,
                  close_timeout_seconds=0, max_connections=0, max_headers=0, max_header_bytes=100,
                  write_buffer_bytes=10).problems()
    for name in ("LIVEGATE_IDLE_TIMEOUT", "LIVEGATE_HEADER_TIMEOUT", "LIVEGATE_BODY_TIMEOUT", "LIVEGATE_CLOSE_TIMEOUT",
                 "LIVEGATE_MAX_CONNECTIONS", "LIVEGATE_MAX_HEADERS", "LIVEGATE_MAX_HEADER_BYTES",
                 "LIVEGATE_WRITE_BUFFER_BYTES"):
        assert any(name in problem for problem in bad), name


def test_the_cap_is_lowered_to_the_fd_limit_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    with caplog.at_level(logging.WARNING, logger="livegate.server"):
        limits = transport_limits(_config(max_connections=50_000, header_timeout_seconds=3.0))
    assert limits.max_connections == 1024 - RESERVED_FDS and limits.header_timeout == 3.0
    assert any("LIVEGATE_MAX_CONNECTIONS lowered" in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert transport_limits(_config(max_connections=500)).max_connections == 500
    assert not caplog.records
