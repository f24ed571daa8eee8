"""Both specs are valid documents of their standard (offline), agree with each other and
load in a third-party parser; the generated code is current."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.readers import read_from_filename

from livegate.contract.generate import check, find_root

ROOT = find_root(Path(__file__).parent)
ASYNCAPI = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
OPENAPI = yaml.safe_load((ROOT / "openapi.yaml").read_text())
# The official AsyncAPI 3.0.0 schema, vendored from npm @asyncapi/specs 6.11.1 (Apache-2.0).
ASYNCAPI_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "asyncapi-3.0.0-without-id.json").read_text())


def test_asyncapi_is_valid_asyncapi_3() -> None:
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).iter_errors(ASYNCAPI)]
    assert errors == []


def test_openapi_is_valid_openapi_3_1_raw_and_bundled() -> None:
    spec, base_uri = read_from_filename(str(ROOT / "openapi.yaml"))
    validate_openapi(spec, base_uri=base_uri)
    validate_openapi(yaml.safe_load((ROOT / "src/livegate/specs/openapi.yaml").read_text()))


def test_generated_files_are_current() -> None:
    assert check(ROOT, echo=lambda _: None) == []


def test_every_message_is_in_a_channel_with_title_and_examples() -> None:
    channels = ASYNCAPI["channels"]
    messages = ASYNCAPI["components"]["messages"]
    assert set().union(*(c["messages"] for c in channels.values())) == set(messages)
    # The SSE channel carries the WebSocket's messages (but `auth`) plus the close event.
    assert set(channels["sseStream"]["messages"]) == set(channels["userStream"]["messages"]) - {"auth"} | {"sseClose"}
    for name, message in messages.items():
        assert message.get("title") and message.get("examples"), name
    operation_messages = {ref["$ref"].rsplit("/", 1)[1] for op in ASYNCAPI["operations"].values()
                          for ref in op["messages"] + op.get("reply", {}).get("messages", [])}
    assert operation_messages == set(messages)


def test_code_tables_are_complete_and_ranges_hold() -> None:
    error_code = ASYNCAPI["components"]["schemas"]["ErrorCode"]
    assert set(error_code["x-code-descriptions"]) == set(error_code["enum"]) == set(error_code["x-fatal"])
    close_codes = {c["code"]: c for c in ASYNCAPI["channels"]["userStream"]["x-close-codes"]}
    for code, entry in close_codes.items():
        assert 4000 <= code <= 4499
        assert entry["reconnect"] == (code < 4400), code
    assert {c for c in error_code["x-fatal"].values() if c} <= set(close_codes)
    names = {c["name"] for c in close_codes.values()}
    assert {"auth_timeout", "auth_failed", "token_expired", "slow_consumer", "too_many_connections",
            "rate_limited", "server_restart", "bad_message"} <= names
    for schema in (ASYNCAPI["components"]["schemas"]["GenerationErrorCode"],
                   OPENAPI["components"]["schemas"]["ProblemCode"]):
        assert set(schema["x-code-descriptions"]) == set(schema["enum"])


def test_shared_schemas_are_referenced_not_copied() -> None:
    shared = set(ASYNCAPI["components"]["schemas"])
    assert not shared & set(OPENAPI["components"]["schemas"]), "define shared schemas once, in asyncapi.yaml"
    text = (ROOT / "openapi.yaml").read_text()
    for name in ("Generation", "Output", "GenerationErrorCode", "GenerationStatus"):
        assert f"./asyncapi.yaml#/components/schemas/{name}" in text or name in ("Output", "GenerationErrorCode")


def test_spec_loads_in_a_third_party_parser() -> None:
    """asyncapi-python's parser (not our generator: it is AMQP/pydantic only) reads our spec."""
    from asyncapi_python_codegen.parser import extract_all_operations, load_document_info

    operations = extract_all_operations(ROOT / "asyncapi.yaml")
    assert set(operations) == set(ASYNCAPI["operations"])
    assert load_document_info(ROOT / "asyncapi.yaml")["asyncapi_version"] == "3.0.0"
