"""Every example in both specs decodes into its generated struct, validates with an
independent validator (jsonschema) and re-encodes to equal JSON; invalid payloads are
refused by both, with a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from livegate.contract.generate import find_root
from livegate.errors import ContractError
from livegate.protocol import codec, http, messages
from livegate.testing.spec_validation import message_errors, schema_errors

ROOT = find_root(Path(__file__).parent)
ASYNCAPI = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
OPENAPI = yaml.safe_load((ROOT / "openapi.yaml").read_text())
CLIENT = {"auth", "refresh", "ping"}

MESSAGE_EXAMPLES = [
    pytest.param(name, example["payload"], id=f"{name}-{example.get('name', i)}")
    for name, message in ASYNCAPI["components"]["messages"].items()
    for i, example in enumerate(message["examples"])
]


def _normalise(value: Any) -> Any:
    """Equal JSON, allowing the encoder's canonical date-time form."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and len(value) >= 20 and value[10:11] == "T" and value.endswith("Z"):
        from datetime import datetime
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


@pytest.mark.parametrize("name, payload", MESSAGE_EXAMPLES)
def test_message_examples_decode_validate_and_roundtrip(name: str, payload: dict[str, Any]) -> None:
    direction = "client" if name in CLIENT else "sse" if name == "sseClose" else "server"
    assert message_errors(payload, direction) == []
    raw = msgspec.json.encode(payload)
    if direction == "sse":  # not in the WebSocket's union: no tag
        close = msgspec.json.decode(raw, type=messages.SseClose)
        assert msgspec.json.decode(msgspec.json.encode(close)) == payload
        return
    decoded = codec.decode_client(raw) if direction == "client" else codec.decode_server(raw)
    assert decoded.__struct_config__.tag == payload["type"]
    assert _normalise(msgspec.json.decode(codec.encode(decoded))) == _normalise(payload)


def _openapi_examples() -> list[Any]:
    found = []
    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content and "example" in content:
                found.append(pytest.param(content["schema"]["$ref"].rsplit("/", 1)[1], content["example"],
                                          id=f"{method}-{path}"))
    return found


STRUCTS = {"PublishRequest": http.PublishRequest, "CreateGenerationRequest": http.CreateGenerationRequest,
           "DevTokenRequest": http.DevTokenRequest}


@pytest.mark.parametrize("schema, example", _openapi_examples())
def test_openapi_examples_decode_validate_and_roundtrip(schema: str, example: dict[str, Any]) -> None:
    assert schema_errors(example, schema) == []
    decoded = msgspec.convert(example, STRUCTS[schema])
    assert msgspec.json.decode(msgspec.json.encode(decoded)) == example


@pytest.mark.parametrize(
    "frame, code, path",
    [
        ({"type": "auth"}, "invalid_message", "$"),
        ({"type": "auth", "token": 5}, "invalid_message", "$.token"),
        ({"type": "auth", "token": "t", "resume": {"epoch": "e", "offset": -1}}, "invalid_message", "$.resume.offset"),
        ({"type": "auth", "token": "t", "resume": {"epoch": "e"}}, "invalid_message", "$.resume"),
        ({"type": "ping", "id": ""}, "invalid_message", "$.id"),
        ({"type": "subscribe"}, "unknown_type", "$.type"),
        ({"token": "t"}, "unknown_type", "$.type"),
    ],
)
def test_invalid_client_payloads_are_refused_by_both(frame: dict[str, Any], code: str, path: str) -> None:
    assert message_errors(frame, "client"), "jsonschema must refuse it too"
    with pytest.raises(ContractError) as info:
        codec.decode_client(msgspec.json.encode(frame))
    assert info.value.code == code and info.value.path == path


@pytest.mark.parametrize(
    "frame, path",
    [
        ({"type": "welcome", "connectionId": "c", "userId": "u", "expiresAt": "2026-01-01T00:00:00Z",
          "heartbeatIntervalMs": 0, "epoch": "e", "offset": 0}, "$.heartbeatIntervalMs"),
        ({"type": "generationProgress", "epoch": "e", "offset": 1, "timestamp": "2026-01-01T00:00:00Z",
          "generationId": "g", "fraction": 1.5}, "$.fraction"),
        ({"type": "generationUpdate", "epoch": "e", "offset": 1, "timestamp": "2026-01-01T00:00:00Z",
          "generationId": "g", "status": "exploded"}, "$.status"),
        ({"type": "error", "code": "not_a_code", "message": "m"}, "$.code"),
    ],
)
def test_invalid_server_payloads_are_refused_by_both(frame: dict[str, Any], path: str) -> None:
    assert message_errors(frame, "server")
    with pytest.raises(ContractError) as info:
        codec.decode_server(msgspec.json.encode(frame))
    assert info.value.path == path


def test_strict_contract_check_refuses_unknown_properties() -> None:
    assert message_errors({"type": "ping", "extra": 1}, "client")
