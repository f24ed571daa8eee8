"""Validate frames and bodies against the published specs with an independent validator
(``jsonschema``, not the msgspec structs), for conformance tests of servers and clients."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema
import yaml


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(resources.files("livegate.specs").joinpath("asyncapi.yaml").read_text())
    return document


@functools.cache
def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(resources.files("livegate.specs").joinpath("openapi.yaml").read_text())
    return document


@functools.cache
def _validator(document: str, pointer: str) -> jsonschema.protocols.Validator:
    doc = asyncapi_document() if document == "asyncapi" else openapi_document()
    schema = {**doc, "$ref": pointer}
    cls = jsonschema.Draft7Validator if document == "asyncapi" else jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def message_errors(frame: str | bytes | dict[str, Any], direction: str = "server") -> list[str]:
    """Every violation of ``ServerMessage`` (or ``ClientMessage``) in one frame, as text.
    ``direction="sse"``: a server message or the SSE-only ``SseClose`` (``type: close``).

    Besides the schema, checks what JSON Schema cannot say per variant: no property
    outside the variant's ``properties`` (our contract tests are strict even though the
    structs are lenient for additive evolution).
    """
    data = json.loads(frame) if isinstance(frame, (str, bytes)) else frame
    if direction == "sse" and isinstance(data, dict) and data.get("type") == "close":
        return _strict_errors(data, "SseClose", ["SseClose"])  # the SSE-only last event
    name = "ClientMessage" if direction == "client" else "ServerMessage"
    schemas = asyncapi_document()["components"]["schemas"]
    return _strict_errors(data, name, [ref["$ref"].rsplit("/", 1)[1] for ref in schemas[name]["oneOf"]])


def _strict_errors(data: Any, name: str, variants: list[str]) -> list[str]:
    validator = _validator("asyncapi", f"#/components/schemas/{name}")
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(data)]
    if not errors and isinstance(data, dict):
        schemas = asyncapi_document()["components"]["schemas"]
        for variant_name in variants:
            variant = schemas[variant_name]
            if variant["properties"]["type"]["const"] == data.get("type"):
                extra = set(data) - set(variant["properties"])
                if extra:
                    errors.append(f"$: properties not in the contract: {sorted(extra)}")
    return errors


def assert_valid_message(frame: str | bytes | dict[str, Any], direction: str = "server") -> dict[str, Any]:
    errors = message_errors(frame, direction)
    if errors:
        raise AssertionError(f"{direction} frame violates asyncapi.yaml: {errors}\nframe: {str(frame)[:500]}")
    return json.loads(frame) if isinstance(frame, (str, bytes)) else frame


def schema_errors(instance: Any, schema_name: str, document: str = "openapi") -> list[str]:
    validator = _validator(document, f"#/components/schemas/{schema_name}")
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(instance)]
