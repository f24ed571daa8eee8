"""Load the two specs and bundle openapi.yaml's references into asyncapi.yaml.

openapi.yaml refers to the schemas it shares with asyncapi.yaml
(``./asyncapi.yaml#/components/schemas/Generation``) instead of copying them. Tools that
want one self-contained document (the served ``/openapi.yaml``, the HTTP struct generator,
schemathesis) get :func:`bundle_openapi`, which copies each referenced schema — and the
schemas it refers to in turn — into ``components.schemas`` under the same name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ASYNCAPI_REF_PREFIX = "./asyncapi.yaml#/components/schemas/"
LOCAL_REF_PREFIX = "#/components/schemas/"


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return data


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.append(ref)
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(ASYNCAPI_REF_PREFIX):
            out["$ref"] = LOCAL_REF_PREFIX + ref[len(ASYNCAPI_REF_PREFIX) :]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def bundle_openapi(openapi: dict[str, Any], asyncapi: dict[str, Any]) -> dict[str, Any]:
    """Return a self-contained copy of ``openapi`` (inputs are not modified)."""
    shared = asyncapi["components"]["schemas"]
    bundled = _rewrite_refs(copy.deepcopy(openapi))
    schemas: dict[str, Any] = bundled.setdefault("components", {}).setdefault("schemas", {})
    wanted = [r[len(ASYNCAPI_REF_PREFIX) :] for r in _refs(openapi) if r.startswith(ASYNCAPI_REF_PREFIX)]
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in shared:
            raise KeyError(f"openapi.yaml refers to asyncapi.yaml schema {name!r}, which does not exist")
        if name in schemas and name not in openapi.get("components", {}).get("schemas", {}):
            continue
        if name in openapi.get("components", {}).get("schemas", {}):
            raise ValueError(f"schema {name!r} is defined in both specs; define it once (asyncapi.yaml)")
        schemas[name] = copy.deepcopy(shared[name])
        wanted.extend(r[len(LOCAL_REF_PREFIX) :] for r in _refs(shared[name]) if r.startswith(LOCAL_REF_PREFIX))
    bundled["components"]["schemas"] = dict(sorted(schemas.items()))
    return dict(bundled)


def message_json_schema(asyncapi: dict[str, Any]) -> dict[str, Any]:
    """A standalone draft-07 JSON Schema bundle of every message payload.

    ``definitions`` holds every component schema (refs rewritten to ``#/definitions/``);
    the root validates any ``ServerMessage`` or ``ClientMessage``. The browser client and
    independent validators use it.
    """
    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "discriminator" and isinstance(v, str):
                    continue  # AsyncAPI's string form; not JSON Schema
                if k.startswith("x-"):
                    continue
                out[k] = rewrite(v)
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith(LOCAL_REF_PREFIX):
                out["$ref"] = "#/definitions/" + ref[len(LOCAL_REF_PREFIX) :]
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    definitions = {k: rewrite(v) for k, v in sorted(asyncapi["components"]["schemas"].items())}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://livegate.dev/schemas/messages.json",
        "title": f"{asyncapi['info']['title']} messages {asyncapi['info']['version']}",
        "description": "GENERATED from asyncapi.yaml by `livegate contract generate`; do not edit.",
        "oneOf": [{"$ref": "#/definitions/ServerMessage"}, {"$ref": "#/definitions/ClientMessage"}],
        "definitions": definitions,
    }
