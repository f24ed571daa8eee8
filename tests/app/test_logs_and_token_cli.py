"""Structured logs carry connection and user ids and never a token; ``livegate token``
prints a token the gateway accepts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from livegate.logs import JsonFormatter
from livegate.protocol import http
from livegate.testing.gateway import TEST_SECRET, running_gateway


async def test_logs_carry_ids_and_never_the_token(tmp_path: Path, connect, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("livegate")  # it does not propagate to the root: attach caplog here
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="livegate")
    try:
        async with running_gateway(tmp_path, queue_max_bytes=20_000) as gw:
            tokens = [gw.token("alice"), gw.token("alice", ttl_seconds=900), gw.token("mallory")]
            probe = await connect(gw)
            welcome = await probe.auth(tokens[0])
            await probe.send({"type": "refresh", "id": "r1", "token": tokens[1]})
            assert (await probe.recv_type("refreshed"))["id"] == "r1"
            # A slow-consumer close is logged as a warning with both ids.
            await gw.gateway.publisher.publish([("alice", http.NotificationInput(level="info", message="x" * 500))
                                                for _ in range(100)])
            await probe.expect_close(4001)
            refused = await connect(gw)
            await refused.send({"type": "auth", "token": tokens[2] + "tampered"})
            await refused.expect_close(4401)
    finally:
        logger.removeHandler(caplog.handler)
    records = [r for r in caplog.records if r.name.startswith("livegate")]
    by_message = {r.getMessage(): r for r in records}
    for message in ("connection authenticated", "slow consumer"):
        record = by_message[message]
        assert record.connection_id == welcome["connectionId"] and record.user_id == "alice", message
        line = json.loads(JsonFormatter().format(record))
        assert line["connection_id"] == welcome["connectionId"] and line["user_id"] == "alice"
    formatter = JsonFormatter()
    for record in records:
        text = formatter.format(record) + repr(vars(record))
        for token in tokens:
            for part in token.split("."):  # not even the signature or the payload alone
                assert part not in text, f"token material in a log record: {record.getMessage()!r}"


def test_token_cli_prints_a_token_the_gateway_accepts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEGATE_")}
    env["LIVEGATE_JWT_SECRET"] = TEST_SECRET
    before = time.time()
    proc = subprocess.run([sys.executable, "-m", "livegate.cli", "token", "carol", "--ttl", "120"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token

    import asyncio

    import websockets

    async def check() -> dict:
        async with running_gateway(tmp_path) as gw, websockets.connect(gw.ws_url, compression=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    welcome = asyncio.run(check())
    assert welcome["type"] == "welcome" and welcome["userId"] == "carol"
    expires = datetime.fromisoformat(welcome["expiresAt"]).timestamp()
    assert before + 119 <= expires <= time.time() + 121


def test_token_cli_without_a_secret_fails_clearly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEGATE_")}
    proc = subprocess.run([sys.executable, "-m", "livegate.cli", "token", "carol"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and proc.stdout == ""
