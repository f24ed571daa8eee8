"""The committed browser validator (web/generated/validate.js) was built from the current
web/generated/messages.schema.json: the bundle embeds the schema's SHA-256
(web/tools/build-validator.mjs). On failure: `cd web/tools && npm ci && npm run build`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def test_the_validator_bundle_matches_the_schema_bundle() -> None:
    schema = (WEB / "generated" / "messages.schema.json").read_bytes()
    bundle = (WEB / "generated" / "validate.js").read_text()
    embedded = re.search(r"^// schema-sha256: ([0-9a-f]{64})$", bundle, re.MULTILINE)
    assert embedded, "validate.js has no schema-sha256 header"
    assert embedded.group(1) == hashlib.sha256(schema).hexdigest(), (
        "web/generated/validate.js is stale: run `cd web/tools && npm ci && npm run build`")
    assert f'SCHEMA_SHA256 = "{embedded.group(1)}"' in bundle


def test_the_validator_bundle_is_dependency_free() -> None:
    bundle = (WEB / "generated" / "validate.js").read_text()
    code = "\n".join(line for line in bundle.splitlines() if not line.lstrip().startswith("//"))
    assert not re.search(r"^\s*import\s", code, re.MULTILINE), "the bundle must not import anything"
    # ajv keeps its runtime helpers' source as a string ('require("ajv/...")'): not a call
    assert not re.search(r"(?<!')\brequire\(\s*['\"]", code), "no CommonJS requires"
