"""schemathesis over openapi.yaml against the app (its own instance, over ASGI, with its
lifespan): no 5xx, every response conforms to its schema, negative data is refused and
auth is enforced — every default check of schemathesis 4, on every operation.

Two things are configured rather than checked, and both are what the spec says:

* ``positive_data_acceptance`` also accepts 422 where a schema-valid request can still
  be wrong in a way openapi.yaml cannot express: a tool's own input schema
  (``createGeneration``) and an opaque cursor (``listGenerations``); and 416 for a valid
  ``Range`` that lies outside the output (``getOutput``).
* The spec documents (``application/yaml``) are declared ``type: string``: their body is
  compared as text, not parsed into an object first.
* ``openSseStream`` (an event stream that does not end by itself) is read up to its first
  event; the stream itself is tests/app/test_sse.py's.
"""

from __future__ import annotations

import atexit
import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from livegate.app import Gateway, create_app
from livegate.protocol.auth import mint_token
from livegate.testing import gateway as testing_gateway

MAX_EXAMPLES = 25
DEFAULT_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
TOOLS = """
[[tools]]
id = "demo"
kind = "demo"
[tools.settings]
duration_seconds = 0
steps = 1
"""


@schemathesis.deserializer("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
def _spec_documents_are_text(_ctx: Any, response: Any) -> str:
    return response.content.decode(response.encoding or "utf-8")  # type: ignore[no-any-return]


def config(user_token: str) -> SchemathesisConfig:
    def accepting(operation_id: str, *extra: str) -> dict[str, Any]:
        statuses = DEFAULT_ACCEPTED + list(extra)
        return {"include-operation-id": operation_id,
                "checks": {"positive_data_acceptance": {"expected-statuses": statuses}}}

    return SchemathesisConfig.from_dict({
        "headers": {"Authorization": f"Bearer {user_token}"},
        "generation": {"max-examples": MAX_EXAMPLES},
        "operations": [
            {"include-operation-id": "publishEvents",
             "headers": {"Authorization": f"Bearer {testing_gateway.TEST_SERVICE_TOKEN}"}},
            accepting("createGeneration", "422"),
            accepting("listGenerations", "422"),
            accepting("getOutput", "416"),
            # A stream does not end by itself: schemathesis reads its first event (`welcome`,
            # each checked against `SseEvent`) and stops; tests/app/test_sse.py checks the rest.
            # (400 too: schemathesis generates a `Last-Event-ID` its pattern refuses, e.g. "0").
            {**accepting("openSseStream", "400"), "max-stream-events": 1},
        ],
    })


class FreshGatewayPerLifespan:
    """An ASGI app that builds a new gateway (own data directory) at every lifespan
    start: schemathesis runs one lifespan per operation, and a gateway is started once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.app = self._make()

    def _make(self) -> Any:
        data = Path(tempfile.mkdtemp(dir=self.root))
        tools = data / "tools.toml"
        tools.write_text(TOOLS)
        return create_app(gateway=Gateway(testing_gateway.test_config(data / "data", tools_file=str(tools))))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.app = self._make()
        await self.app(scope, receive, send)


ROOT = Path(tempfile.mkdtemp(prefix="livegate-schemathesis-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
USER_TOKEN = mint_token(testing_gateway.TEST_SECRET, "alice", ttl_seconds=3600)
schema = schemathesis.openapi.from_asgi("/openapi.yaml", FreshGatewayPerLifespan(ROOT), config=config(USER_TOKEN))


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_openapi_yaml(case: Any) -> None:
    case.call_and_validate()


def test_every_operation_is_covered() -> None:
    """Every operation of openapi.yaml is exercised but the one serving the document
    itself (schemathesis loads the schema from it)."""
    spec = json.loads(json.dumps(schema.raw_schema))
    paths = {path for path in spec["paths"]} - {"/openapi.yaml"}
    tested = {result.ok().path for result in schema.get_all_operations()}
    assert tested == paths


StatefulBase = schema.as_state_machine()


class APIWorkflows(StatefulBase):  # type: ignore[misc,valid-type]
    """Chains of calls along openapi.yaml's links (create -> get / cancel / list ...).

    Each run is a new user: what a link draws from (``GET /v1/generations`` -> its first item)
    must be the same when hypothesis replays a run, and earlier runs' generations of a shared
    user made it differ (hypothesis' ``FlakyStrategyDefinition``)."""

    def setup(self) -> None:
        super().setup()
        user = "workflow-" + secrets.token_hex(4)
        self._user_headers = {"Authorization": f"Bearer {mint_token(testing_gateway.TEST_SECRET, user, ttl_seconds=3600)}"}

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        kwargs = dict(super().get_call_kwargs(case))
        if case.operation.path != "/v1/events":  # the publisher keeps its service token
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **self._user_headers}
        return kwargs

    def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
        case.validate_response(response)


TestAPIWorkflows = APIWorkflows.TestCase
TestAPIWorkflows.settings = settings(
    max_examples=15, stateful_step_count=6, deadline=None, suppress_health_check=list(HealthCheck)
)
