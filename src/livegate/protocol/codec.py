"""One decoder per direction, built once at import (a loose union fails here, not later).

Keeps "not JSON" (``bad_json``) apart from "JSON of the wrong shape at ``$.path``"
(``invalid_message``) and from "a ``type`` this protocol does not know" (``unknown_type``),
as the ``error`` message of asyncapi.yaml requires.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

from livegate.errors import ContractError
from livegate.protocol import messages

ClientMessage = messages.ClientMessage
ServerMessage = messages.ServerMessage

_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(messages.ClientMessage)
_server_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(messages.ServerMessage)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `(\$[^`]*)`$")


def _tags(union: Any) -> frozenset[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(m.__struct_config__.tag for m in members)


CLIENT_TYPES = _tags(messages.ClientMessage)
SERVER_TYPES = _tags(messages.ServerMessage)


def _shape_error(exc: msgspec.ValidationError, data: str | bytes, known: frozenset[str]) -> ContractError:
    text = str(exc)
    match = _PATH.search(text)
    path = match.group(1) if match else "$"
    message = _PATH.sub("", text)
    # Tell an unknown ``type`` apart from a wrong field (only on this error path).
    try:
        raw = _any_decoder.decode(data)
    except msgspec.DecodeError:  # msgspec validates the first value before seeing trailing bytes
        return ContractError("The frame is not valid JSON", code="bad_json")
    if not isinstance(raw, dict):
        return ContractError("A message must be a JSON object", code="invalid_message", path="$")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in known:
        shown = kind if isinstance(kind, str) else "missing"
        return ContractError(f"Unknown message type: {shown[:64]!r}", code="unknown_type", path="$.type")
    return ContractError(message, code="invalid_message", path=path)


def decode_client(data: str | bytes) -> ClientMessage:
    """Decode one client frame, or raise :class:`ContractError` with the contract's code."""
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _shape_error(exc, data, CLIENT_TYPES) from None
    except msgspec.DecodeError:
        raise ContractError("The frame is not valid JSON", code="bad_json") from None


def decode_server(data: str | bytes) -> ServerMessage:
    """Decode one server frame (used by clients and tests)."""
    try:
        return _server_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _shape_error(exc, data, SERVER_TYPES) from None
    except msgspec.DecodeError:
        raise ContractError("The frame is not valid JSON", code="bad_json") from None


def request_id_of(data: str | bytes) -> str | None:
    """Best-effort ``id`` of a refused frame, so the ``error`` can echo it."""
    try:
        raw = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    rid = raw.get("id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


def encode_text(message: Any) -> str:
    """Encode to ``str``: browsers need text frames for JSON."""
    return _encoder.encode(message).decode()
