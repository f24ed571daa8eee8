"""Hostile JWT headers and claims get the contract's answer (issue 14): ``token_malformed``
(or another token code) as a 401 problem on HTTP and an ``error`` frame + 4401/4402 on the
WebSocket; never a 500, a 4500 close or an error-level log line. Plus a hypothesis fuzz
over headers and claims, through both interfaces of one app."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from livegate.app import Gateway, create_app
from livegate.testing import gateway as testing_gateway
from livegate.testing.gateway import TEST_SECRET, running_gateway
from tests.app._hostile import assert_error_then_close, assert_problem, hs256_token, no_error_logs

NOW = time.time()
GOOD_CLAIMS = {"sub": "alice", "exp": NOW + 600}

HOSTILE = [  # (header, claims, expected error code)
    ({"alg": "HS256", "kid": 5}, GOOD_CLAIMS, "token_malformed"),
    ({"alg": "HS256", "kid": {"a": 1}}, GOOD_CLAIMS, "token_malformed"),
    ({"alg": "HS256", "kid": None}, GOOD_CLAIMS, "token_malformed"),
    ({"alg": "HS256", "crit": ["x-unknown"], "x-unknown": 1}, GOOD_CLAIMS, "token_malformed"),
    ({"alg": "HS256", "crit": "b64"}, GOOD_CLAIMS, "token_malformed"),
    ({"alg": "HS256", "crit": []}, GOOD_CLAIMS, "token_malformed"),
    ({"alg": "HS256", "b64": False, "crit": ["b64"]}, GOOD_CLAIMS, "token_malformed"),
    ([1, 2], GOOD_CLAIMS, "token_malformed"),
    ({"alg": ["HS256"]}, GOOD_CLAIMS, "token_algorithm_not_allowed"),
    ({"alg": "HS256"}, {"sub": 7, "exp": NOW + 600}, "token_subject_missing"),
    ({"alg": "HS256"}, {"sub": "alice", "exp": float("inf")}, "token_malformed"),
    ({"alg": "HS256"}, {"sub": "alice", "exp": 1e300}, "token_malformed"),
    ({"alg": "HS256"}, {"sub": "alice", "exp": True}, "token_malformed"),
    ({"alg": "HS256"}, {"sub": "alice", "exp": NOW + 600, "iat": float("nan")}, "token_malformed"),
    ({"alg": "HS256"}, [GOOD_CLAIMS], "token_malformed"),
]


def _tokens() -> list[tuple[str, str]]:
    cases = [(hs256_token(h, c, TEST_SECRET), code) for h, c, code in HOSTILE]
    deep = b'{"alg":"HS256","x":' + b"[" * 2400 + b"]" * 2400 + b"}"
    cases.append((hs256_token(None, GOOD_CLAIMS, TEST_SECRET, raw_header=deep), "token_malformed"))
    cases.append((hs256_token({"alg": "HS256"}, None, TEST_SECRET, raw_claims=b'{"sub":"a","exp":1e400}'),
                  "token_malformed"))
    cases.append((hs256_token(None, GOOD_CLAIMS, TEST_SECRET, raw_header=b"\xff\xfe"), "token_malformed"))
    return cases


async def test_hostile_headers_and_claims_get_token_codes_on_both_interfaces(tmp_path: Path, connect) -> None:
    import websockets
    from websockets.exceptions import ConnectionClosed

    async with running_gateway(tmp_path) as gw:
        with no_error_logs():
            async with gw.http() as client:
                for token, code in _tokens():
                    response = await client.get("/v1/tools", headers={"Authorization": f"Bearer {token}"})
                    body = assert_problem(response.status_code, response.headers, response.content, {401})
                    assert body["code"] == "unauthorized" and body["detail"].startswith(code + ":"), body
                    async with websockets.connect(gw.ws_url, compression=None, max_queue=None) as ws:
                        await ws.send(json.dumps({"type": "auth", "id": "a", "token": token}))
                        frames = []
                        with pytest.raises(ConnectionClosed) as closed:
                            while True:
                                frames.append(await ws.recv())
                        assert closed.value.rcvd is not None
                        error = assert_error_then_close(frames, closed.value.rcvd.code)
                        assert error["code"] == code and closed.value.rcvd.code == 4401, (error, token[:60])
            # The process is fine: a good token still works.
            probe = await connect(gw)
            assert (await probe.auth(gw.token("alice")))["userId"] == "alice"


# -- fuzz -------------------------------------------------------------------------------------

_json_atoms = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(_json_atoms, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_header = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["HS256", "HS512", "RS256", "none", "None", ""]) | _json,
    "typ": st.just("JWT") | _json,
    "kid": _json,
    "crit": st.lists(st.sampled_from(["b64", "exp", "x", ""]), max_size=3) | _json,
    "b64": _json,
    "jku": _json,
    "x5c": _json,
}) | _json
_claims = st.fixed_dictionaries({}, optional={
    "sub": st.just("alice") | _json,
    "exp": st.just(NOW + 600) | st.floats() | st.integers() | _json,
    "nbf": st.floats() | st.integers() | _json,
    "iat": st.floats() | st.integers() | _json,
    "iss": _json,
    "aud": _json,
    "jti": _json,
}) | _json


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    gateway = Gateway(testing_gateway.test_config(tmp_path_factory.mktemp("fuzz-tokens"), rate_limit_burst=100_000))
    with TestClient(create_app(gateway=gateway)) as test_client:
        yield test_client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(header=_header, claims=_claims, signed=st.booleans())
def test_fuzz_jwt_headers_and_claims_get_documented_answers(client: TestClient[Any], header: Any, claims: Any,
                                                            signed: bool) -> None:
    try:
        raw_header, raw_claims = json.dumps(header).encode(), json.dumps(claims).encode()
    except ValueError:
        return
    token = hs256_token(None, None, TEST_SECRET if signed else "another-secret-0123456789abcdef0123",
                        raw_header=raw_header, raw_claims=raw_claims)
    with no_error_logs():
        response = client.get("/v1/tools", headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            body = assert_problem(response.status_code, response.headers, response.content, {401})
            assert body["code"] == "unauthorized"
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_text(json.dumps({"type": "auth", "token": token}))
            first = json.loads(ws.receive_text())
            if first["type"] == "welcome":
                assert response.status_code == 200
                return
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert_error_then_close([first], closed.value.code)
            assert first["code"].startswith("token_"), first
