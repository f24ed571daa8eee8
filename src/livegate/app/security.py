"""Security headers on every HTTP response (issue 14), set in one place: a Litestar
``before_send`` hook, so routes, static files, problems and the router's own 404s all get
them.

* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` everywhere (output URLs carry a signature in the query:
  no ``Referer`` may leak it).
* A ``Content-Security-Policy`` per kind of page, always with ``frame-ancestors 'none'``,
  ``object-src 'none'`` and ``base-uri 'none'``:

  - the sandbox (``web/``): scripts and styles from the gateway only, no inline script;
    previews are ``data:`` images, outputs same-origin media; the WebSocket same-origin;
  - ``/docs/``: the vendored renderers plus each page's one inline script, allowed by its
    SHA-256 (computed from the served files at start, so a regenerated page stays allowed);
    the renderers inject ``<style>`` elements, hence ``style-src 'unsafe-inline'``. The
    AsyncAPI page alone also needs ``'unsafe-eval'``: its renderer compiles JSON Schemas
    with ajv (``new Function``). It renders only our own spec, inlined, and no user data;
  - ``/v1/outputs/...``: ``sandbox`` — an HTML or SVG output opened directly runs in an
    opaque origin without script (and is also sent as an attachment, routes_generations.py);
  - the API's JSON and YAML: ``default-src 'none'``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from litestar.types import Message, Scope

_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>(.*?)</script>", re.S)
_COMMON = "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
SANDBOX_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "media-src 'self'; connect-src 'self'; form-action 'self'; " + _COMMON)
OUTPUT_CSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox; " + _COMMON
API_CSP = "default-src 'none'; " + _COMMON
#: Paths of the API (JSON/YAML answers); everything else but /docs is the sandbox.
_API_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics", "/asyncapi.yaml", "/openapi.yaml")

STATIC_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def inline_script_hashes(directory: Path) -> list[str]:
    """CSP sources (``'sha256-...'``) of every inline script of the HTML pages under ``directory``."""
    hashes = set()
    for page in sorted(directory.rglob("*.html")) if directory.is_dir() else []:
        for match in _INLINE_SCRIPT.finditer(page.read_bytes()):
            digest = base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode()
            hashes.add(f"'sha256-{digest}'")
    return sorted(hashes)


#: The one page whose vendored renderer evaluates code (ajv in @asyncapi/react-component).
EVAL_PAGES = frozenset({"/docs/reference/asyncapi.html"})


def docs_csp(docs: Path, *, unsafe_eval: bool = False) -> str:
    scripts = " ".join(["'self'", *(["'unsafe-eval'"] if unsafe_eval else []), *inline_script_hashes(docs)])
    return (f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            f"font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; " + _COMMON)


def csp_for(path: str, docs: str, docs_eval: str) -> str:
    if path.startswith("/v1/outputs/"):
        return OUTPUT_CSP
    if path.startswith(_API_PREFIXES):
        return API_CSP
    if path in EVAL_PAGES:
        return docs_eval
    if path == "/docs" or path.startswith("/docs/"):
        return docs
    return SANDBOX_CSP


def security_headers_hook(docs: Path) -> Callable[[Message, Scope], Awaitable[None]]:
    """The ``before_send`` hook: adds the headers above to every ``http.response.start``
    that does not set them itself (a route may be stricter)."""
    docs_policy, docs_eval_policy = docs_csp(docs), docs_csp(docs, unsafe_eval=True)
    cache: dict[str, bytes] = {}

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return  # WebSocket frames and bodies pass untouched
        path = scope["path"]
        policy = cache.get(path)
        if policy is None:
            policy = csp_for(path, docs_policy, docs_eval_policy).encode()
            if len(cache) < 1024:
                cache[path] = policy
        headers = list(message.get("headers") or [])
        present = {name.lower() for name, _ in headers}
        headers.extend(h for h in STATIC_HEADERS if h[0] not in present)
        if b"content-security-policy" not in present:
            headers.append((b"content-security-policy", policy))
        message["headers"] = headers

    return add_security_headers
