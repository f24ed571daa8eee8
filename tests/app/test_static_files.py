"""What the gateway serves besides the API: the sandbox at ``/`` (its top-level files,
``app/`` and ``generated/``) and the docs at ``/docs/`` — never ``web/tools`` (dev-time build
scripts, possibly ``node_modules``) nor files outside those folders."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("path", "media_type"), [
    ("/", "text/html"), ("/index.html", "text/html"), ("/client.js", "text/javascript"),
    ("/styles.css", "text/css"), ("/app/main.js", "text/javascript"), ("/generated/validate.js", "text/javascript"),
    ("/generated/messages.schema.json", "application/json"), ("/docs/", "text/html"),
    ("/docs/reference/asyncapi.html", "text/html"), ("/docs/contract.md", "text/markdown"),
])
async def test_sandbox_and_docs_are_served(gateway, path: str, media_type: str) -> None:  # type: ignore[no-untyped-def]
    async with gateway.http() as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)


@pytest.mark.parametrize("path", [
    "/tools/package.json", "/tools/build-validator.mjs", "/tools/node_modules/ajv/package.json",
    "/app/../tools/package.json", "/generated/../../pyproject.toml", "/docs/../pyproject.toml", "/pyproject.toml",
])
async def test_dev_tooling_and_files_outside_are_not_served(gateway, path: str) -> None:  # type: ignore[no-untyped-def]
    async with gateway.http() as client:
        response = await client.get(path)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
