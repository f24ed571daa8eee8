"""Every HTTP response carries the security headers (issue 14), including problems and the
router's own 404s; the sandbox's CSP allows no inline script and the docs' only hashed ones."""

from __future__ import annotations

import base64
import hashlib
import re

from livegate.testing.gateway import running_gateway


async def test_every_kind_of_response_has_the_headers(tmp_path) -> None:
    async with running_gateway(tmp_path) as gw, gw.http() as client:
        paths = ["/", "/app/main.js", "/client.js", "/docs/", "/docs/reference/openapi.html",
                 "/docs/reference/asyncapi.html", "/healthz", "/openapi.yaml", "/v1/tools", "/no/such/path",
                 "/v1/outputs/out_0000000000000000"]
        policies = {}
        for path in paths:
            response = await client.get(path)
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["referrer-policy"] == "no-referrer", path
            policy = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy, (path, policy)
            assert len(headers.get_list("content-security-policy")) == 1
            policies[path] = policy
        sandbox = policies["/"]
        assert "script-src 'self';" in sandbox and "unsafe-inline" not in sandbox.split("style-src")[0]
        assert "'unsafe-eval'" not in sandbox
        assert policies["/healthz"].startswith("default-src 'none'")
        assert "sandbox" in policies["/v1/outputs/out_0000000000000000"]
        # The docs pages' inline scripts are allowed by hash, and only they.
        page = (await client.get("/docs/reference/openapi.html")).content
        (inline,) = re.findall(rb"<script>(.*?)</script>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
        assert f"'sha256-{digest}'" in policies["/docs/reference/openapi.html"]
        assert "'unsafe-inline'" not in policies["/docs/reference/openapi.html"].split("style-src")[0]
        assert "'unsafe-eval'" not in policies["/docs/reference/openapi.html"]
