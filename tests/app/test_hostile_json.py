"""Deeply nested and malformed JSON gets the contract's answer (issue 14): a 400 problem on
HTTP (RFC 9457, openapi.yaml) and a ``bad_json`` ``error`` frame on the WebSocket (fatal,
4400, only before ``auth`` as for any bad first frame) — checked before any decoder
recurses. Plus a hypothesis fuzz over nested/malformed bodies for every HTTP operation
and over every client message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from livegate.app import Gateway, create_app
from livegate.protocol.auth import mint_token
from livegate.testing import gateway as testing_gateway
from livegate.testing.gateway import running_gateway
from livegate.testing.spec_validation import openapi_document
from tests.app._hostile import assert_error_then_close, assert_problem, no_error_logs

SERVICE = {"Authorization": f"Bearer {testing_gateway.TEST_SERVICE_TOKEN}"}


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def publish_body(event: bytes) -> bytes:
    return b'{"events":[{"userId":"alice","event":' + event + b"}]}"


async def test_deep_and_malformed_bodies_get_400_problems(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path) as gw:
        probe = await connect(gw)
        await probe.auth(gw.token("alice"))
        cases = [
            ("/v1/events", SERVICE, publish_body(nested_arrays(1000))),
            ("/v1/events", SERVICE, publish_body(nested_arrays(100_000))),
            ("/v1/events", SERVICE, nested_arrays(100_000)),
            ("/v1/events", SERVICE, b"[" * 100_000),  # unclosed
            ("/v1/events", SERVICE, publish_body(b'{"type":"notification","level":"info","message":"\xff\xfe"}')),
            ("/v1/generations", None, b'{"toolId":"demo","inputs":' + nested_objects(5000) + b"}"),
            ("/v1/generations", None, b'{"toolId":"demo","inputs":{"prompt":"\xc3\x28"}}'),
            ("/v1/generations", None, b'{"toolId":"demo","inputs":{"x":' + nested_arrays(40) + b"}}"),
            ("/v1/dev/token", None, b'{"userId":"a","x":' + nested_arrays(30_000) + b"}"),
            ("/v1/dev/token", None, b'{"userId":"\xed\xa0\x80"}'),
        ]
        with no_error_logs():
            async with gw.http("alice") as client:
                for path, headers, content in cases:
                    response = await client.post(path, content=content, headers={
                        "content-type": "application/json", **(headers or {})})
                    body = assert_problem(response.status_code, response.headers, response.content, {400})
                    assert body["code"] == "bad_request", (path, body)
                # A document within the limit is still read (and validated) as before.
                ok = await client.post("/v1/events", content=publish_body(
                    b'{"type":"notification","level":"info","message":"deep","data":' + nested_arrays(20) + b"}"),
                    headers=SERVICE)
                assert ok.status_code == 200, ok.text
        (event,) = await probe.events(1)
        assert event["message"] == "deep"


async def test_a_30000_deep_frame_is_bad_json_and_the_connection_stays(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path) as gw:
        with no_error_logs():
            probe = await connect(gw)
            await probe.auth(gw.token("alice"))
            for frame in ('{"type":"ping","id":"p","x":' + "[" * 30_000 + "]" * 30_000 + "}",
                          "[" * 30_000, '{"type":"refresh","token":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}"):
                await probe.send(frame)
                error = await probe.recv()
                assert error["type"] == "error" and error["code"] == "bad_json" and error["fatal"] is False, error
            await probe.send({"type": "ping", "id": "alive"})
            assert (await probe.recv())["id"] == "alive"
            first = await connect(gw)
            await first.send('{"type":"auth","token":"x","resume":' + "[" * 30_000 + "]" * 30_000 + "}")
            (error,) = await first.expect_close(4400)
            assert error["code"] == "not_authenticated"


# -- fuzz -------------------------------------------------------------------------------------

def _operations() -> list[tuple[str, str, str, set[int]]]:
    """(method, concrete path, operationId, statuses documented besides ``default``)."""
    found = []
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            if method in {"get", "post"}:
                concrete = path.replace("{generationId}", "gen_0123456789abcdef").replace("{outputId}", "out_x")
                concrete = concrete.replace("{connectionId}", "s-00000000-000000000000")
                if op["operationId"] == "openSseStream":  # a ticket that opens nothing: no endless stream
                    concrete += "?ticket=tk_fuzz"
                statuses = {int(s) for s in op["responses"] if s != "default"}
                found.append((method.upper(), concrete, op["operationId"], statuses))
    return found


OPERATIONS = _operations()
_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_nested = st.integers(1, 3000).flatmap(lambda depth: st.tuples(
    st.sampled_from(["[", '{"a":', '{"events":[', '{"inputs":', '[{"x":']), st.just(depth), _scalar,
    st.booleans()))


def _render(part: tuple[str, int, Any, bool]) -> bytes:
    opener, depth, leaf, closed = part
    closer = {"[": "]", '{"a":': "}", '{"events":[': "]}", '{"inputs":': "}", '[{"x":': "}]"}[opener]
    text = opener * depth + json.dumps(leaf) + (closer * depth if closed else "")
    return text.encode()


_bodies = (_nested.map(_render)
           | st.binary(max_size=64)
           | st.builds(lambda a, b: a + b, _nested.map(_render), st.binary(max_size=4))
           | st.sampled_from([b"\xff", b'{"toolId":"demo","inputs":{"p":"\xc3\x28"}}', b"", b"{", b"[]" * 5000]))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    config = testing_gateway.test_config(tmp_path_factory.mktemp("fuzz-json"), rate_limit_burst=1_000_000,
                                         rate_limit_per_second=1_000_000.0)
    with TestClient(create_app(gateway=Gateway(config))) as test_client:
        yield test_client


_FUZZ = settings(max_examples=120, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_FUZZ
@given(body=_bodies, operation=st.sampled_from(OPERATIONS))
def test_fuzz_every_http_operation_answers_documented_statuses(client: TestClient[Any], body: bytes,
                                                               operation: tuple[str, str, str, set[int]]) -> None:
    method, path, operation_id, statuses = operation
    token = SERVICE if operation_id == "publishEvents" else {
        "Authorization": f"Bearer {mint_token(testing_gateway.TEST_SECRET, 'alice')}"}
    with no_error_logs():
        response = client.request(method, path, content=body, headers={"content-type": "application/json", **token})
    assert response.status_code < 500, (operation_id, response.status_code, response.text[:300])
    if response.status_code >= 400:
        # A body is read only by operations that declare one; they document 400 and 413.
        assert response.status_code in statuses, (operation_id, response.status_code, statuses)
        assert_problem(response.status_code, response.headers, response.content, statuses)


_messages = st.sampled_from(["auth", "refresh", "ping"]).flatmap(lambda kind: st.tuples(st.just(kind), _nested))


@_FUZZ
@given(message=_messages, authenticated=st.booleans())
def test_fuzz_every_client_message_with_nested_fields(client: TestClient[Any], message: tuple[str, Any],
                                                      authenticated: bool) -> None:
    kind, nested = message
    field = {"auth": "resume", "refresh": "token", "ping": "id"}[kind]
    frame = b'{"type":"' + kind.encode() + b'","' + field.encode() + b'":' + _render(nested) + b"}"
    token = mint_token(testing_gateway.TEST_SECRET, "alice")
    with no_error_logs(), client.websocket_connect("/v1/ws") as ws:
        if authenticated:
            ws.send_text(json.dumps({"type": "auth", "token": token}))
            assert json.loads(ws.receive_text())["type"] == "welcome"
        ws.send_text(frame.decode())
        answer = json.loads(ws.receive_text())
        if authenticated:
            error = assert_error_then_close([answer], None)
            assert error["code"] in {"bad_json", "invalid_message"} and not error["fatal"], error
            ws.send_text('{"type":"ping","id":"after"}')
            assert json.loads(ws.receive_text())["id"] == "after"
        else:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert_error_then_close([answer], closed.value.code)
