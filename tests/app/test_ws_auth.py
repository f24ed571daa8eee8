"""``/v1/ws`` authentication, tokens and refusals, over a real socket."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt

from livegate.testing.gateway import TEST_SECRET, running_gateway


async def test_auth_welcome_and_ping(gateway, connect) -> None:
    probe = await connect()
    welcome = await probe.auth(gateway.token("alice"))
    assert welcome["userId"] == "alice" and welcome["id"] == "a1"
    assert welcome["offset"] == 0 and welcome["epoch"] and "recovered" not in welcome
    assert welcome["heartbeatIntervalMs"] == 25_000
    await probe.send({"type": "ping", "id": "p1"})
    assert (await probe.recv())["type"] == "pong"


async def test_first_frame_must_be_auth(gateway, connect) -> None:
    probe = await connect()
    await probe.send({"type": "ping", "id": "p1"})
    (error,) = await probe.expect_close(4400)
    assert error["code"] == "not_authenticated" and error["fatal"] is True and error["id"] == "p1"


async def test_binary_first_frame_is_refused(gateway, connect) -> None:
    probe = await connect()
    await probe.send(b"\x00\x01")
    (error,) = await probe.expect_close(4400)
    assert error["code"] == "not_authenticated"


async def test_auth_timeout(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path / "g", auth_timeout_seconds=0.3) as gw:
        probe = await connect(gw)
        started = time.monotonic()
        (error,) = await probe.expect_close(4005)
        assert error["code"] == "auth_timeout"
        assert 0.25 < time.monotonic() - started < 3


async def test_refused_tokens_have_codes_and_close_codes(gateway, connect) -> None:
    now = time.time()
    cases = [
        ("garbage", "token_malformed", 4401),
        (jwt.encode({"sub": "a", "exp": now + 60}, "wrong-secret-0123456789abcdef0123", "HS256"),
         "token_signature_invalid", 4401),
        (jwt.encode({"sub": "a", "exp": now - 10}, TEST_SECRET, "HS256"), "token_expired", 4402),
        (jwt.encode({"exp": now + 60}, TEST_SECRET, "HS256"), "token_subject_missing", 4401),
        (jwt.encode({"sub": "a", "exp": now + 60, "nbf": now + 600}, TEST_SECRET, "HS256"), "token_not_yet_valid", 4401),
    ]
    for token, code, close in cases:
        probe = await connect()
        await probe.send({"type": "auth", "id": "x", "token": token})
        (error,) = await probe.expect_close(close)
        assert error["code"] == code, token


async def test_token_expiring_refresh_and_expiry(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, token_expiring_lead_seconds=1.0, token_grace_seconds=0.3) as gw:
        probe = await connect(gw)
        welcome = await probe.auth(gw.token("alice", ttl_seconds=1.5))
        warning = await probe.recv_type("tokenExpiring", timeout=3)
        assert warning["expiresAt"] == welcome["expiresAt"]
        await probe.send({"type": "refresh", "id": "r1", "token": gw.token("alice", ttl_seconds=2.0)})
        refreshed = await probe.recv_type("refreshed")
        assert refreshed["id"] == "r1" and refreshed["expiresAt"] > welcome["expiresAt"]
        # Still open after the first token's expiry: events keep flowing.
        await asyncio.sleep(0)  # let the refresh settle; the assertions below wait on events
        await gw.publish("alice", {"type": "notification", "level": "info", "message": "still here"})
        assert (await probe.recv_type("notification", timeout=3))["message"] == "still here"
        # Then no refresh: warning, and a 4402 close after expiry + grace.
        frames = await probe.expect_close(4402, timeout=5)
        assert [f["type"] for f in frames][-1] == "error" and frames[-1]["code"] == "token_expired"


async def test_refresh_for_another_user_closes(gateway, connect) -> None:
    probe = await connect()
    await probe.auth(gateway.token("alice"))
    await probe.send({"type": "refresh", "id": "r1", "token": gateway.token("mallory")})
    (error,) = await probe.expect_close(4401)
    assert error["code"] == "token_subject_mismatch" and error["id"] == "r1"


async def test_second_auth_is_refused_but_connection_stays(gateway, connect) -> None:
    probe = await connect()
    await probe.auth(gateway.token("alice"))
    await probe.send({"type": "auth", "id": "a2", "token": gateway.token("alice")})
    error = await probe.recv()
    assert error["code"] == "already_authenticated" and error["id"] == "a2" and error["fatal"] is False
    await probe.send({"type": "ping"})
    assert (await probe.recv())["type"] == "pong"


async def test_too_many_connections(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, max_connections_per_user=2) as gw:
        for _ in range(2):
            await (await connect(gw)).auth(gw.token("alice"))
        probe = await connect(gw)
        await probe.send({"type": "auth", "token": gw.token("alice")})
        (error,) = await probe.expect_close(4003)
        assert error["code"] == "too_many_connections"
        await (await connect(gw)).auth(gw.token("bob"))  # other users are not affected


async def test_origin_allow_list(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, allowed_origins=("https://app.example",)) as gw:
        probe = await connect(gw, origin="https://evil.example")
        (error,) = await probe.expect_close(4403)
        assert error["code"] == "origin_not_allowed"
        ok = await connect(gw, origin="https://app.example")
        await ok.auth(gw.token("alice"))
