"""The ``openai`` tool: OpenAI's synchronous HTTP API (or any compatible server) via httpx.

Modes (setting ``mode``):

* ``chat`` — ``POST {base_url}/chat/completions`` with ``stream: true``; every content
  delta becomes ``progress(fraction=<estimate>, partial_text=<whole text so far>)`` and the
  final text is stored as a ``text`` output. ``stream = false`` asks for one JSON answer.
* ``image`` — ``POST {base_url}/images/generations``; ``b64_json`` is decoded, a legacy
  ``url`` is downloaded (without our API key), and the picture is stored with its size.
  ``partial_images = N`` streams partial pictures as previews.

Errors are mapped here, at the boundary (``x-request-id`` and the upstream message are
kept in the ``ToolError`` message): 401/403 -> ``upstream_unauthorized``; 400/404/409/422 ->
``upstream_bad_request``; 429 -> ``upstream_rate_limited`` (at once for
``insufficient_quota``); 5xx and connection failures -> ``upstream_unavailable``; timeouts ->
``upstream_timeout``; a stream cut or malformed -> ``upstream_protocol_error``; an
``{"error": ...}`` event inside a stream is mapped by its ``type`` (``server_error`` ->
``upstream_unavailable``, unknown types -> ``upstream_protocol_error``).

Retries (before any output was published): connection errors, timeouts, 408, 409, 429 and
5xx, at most ``max_retries`` times. The wait is ``retry-after-ms`` / ``retry-after`` when
the server sends one (a wait above ``max_retry_after_seconds`` means "do not retry"), else
exponential backoff from ``retry_base_delay_seconds`` with up to 25 % jitter; an
``x-should-retry`` header overrides the decision, as in the official SDK.

Cancelling the run closes the HTTP stream, which is how OpenAI learns to stop. A
synchronous API cannot be re-attached after a restart: :meth:`OpenAITool.reattach`
returns ``None``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.utils
import io
import json
import math
import os
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from livegate.errors import ToolError
from livegate.tools.base import RunContext, StoredOutput, ToolSpec
from livegate.tools.settings import SettingsReader, ToolConfigError, validate_inputs
from livegate.tools.sse import SSEDecoder, SSEEvent

__all__ = ["OpenAITool", "retry_delay", "status_error"]

TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
DEFAULT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
STREAM_ERROR_CODES = {
    "server_error": "upstream_unavailable",
    "rate_limit_exceeded": "upstream_rate_limited",
    "requests": "upstream_rate_limited",
    "tokens": "upstream_rate_limited",
    "insufficient_quota": "upstream_rate_limited",
    "invalid_request_error": "upstream_bad_request",
}


def _status_code(status: int) -> str:
    if status in (401, 403):
        return "upstream_unauthorized"
    if status == 408:
        return "upstream_timeout"
    if status == 429:
        return "upstream_rate_limited"
    if status >= 500:
        return "upstream_unavailable"
    return "upstream_bad_request"


def _error_fields(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"message": body[:200].decode("utf-8", "replace")}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {"message": str(parsed)[:200]}


def status_error(status: int, body: bytes, headers: httpx.Headers) -> ToolError:
    """The ``ToolError`` for a non-2xx answer."""
    fields = _error_fields(body)
    detail = ", ".join(f"{k}={fields[k]}" for k in ("type", "code") if fields.get(k))
    message = f"OpenAI answered HTTP {status}: {fields.get('message') or 'no message'}"
    if detail:
        message += f" [{detail}]"
    if headers.get("x-request-id"):
        message += f" (request id {headers['x-request-id']})"
    return ToolError(message, code=_status_code(status))


def _should_retry(status: int, body: bytes, headers: httpx.Headers) -> bool:
    override = headers.get("x-should-retry")
    if override in ("true", "false"):
        return bool(override == "true")
    fields = _error_fields(body)
    if "insufficient_quota" in (fields.get("code"), fields.get("type")):
        return False  # a quota does not come back by waiting
    return status in (408, 409, 429) or status >= 500


def retry_delay(
    headers: httpx.Headers | None,
    attempt: int,
    *,
    base: float,
    cap: float,
    max_retry_after: float,
    jitter: float,
    now: float | None = None,
) -> float | None:
    """Seconds to wait before retry number ``attempt + 1``, or ``None``: do not retry
    (the server asked for a longer pause than ``max_retry_after``). ``jitter`` in [0, 1)."""
    wait: float | None = None
    if headers is not None:
        if "retry-after-ms" in headers:
            try:
                wait = float(headers["retry-after-ms"]) / 1000
            except ValueError:
                wait = None
        if wait is None and "retry-after" in headers:
            value = headers["retry-after"]
            try:
                wait = float(value)
            except ValueError:
                parsed = email.utils.parsedate_to_datetime(value) if value else None
                if parsed is not None:
                    wait = parsed.timestamp() - (time.time() if now is None else now)
    if wait is not None and wait > max_retry_after:
        return None
    if wait is not None and wait > 0:
        return wait
    backoff: float = min(base * 2**attempt, cap) * (1 - 0.25 * jitter)
    return backoff


class OpenAITool:
    """Settings: ``base_url`` (default ``https://api.openai.com/v1``), ``api_key`` or
    ``api_key_env`` (default ``OPENAI_API_KEY``), ``model``, ``mode`` (``chat`` | ``image``),
    ``max_retries`` (3), ``timeout_seconds`` (60, per connect/read), ``extra_body`` (merged
    into every request), ``stream`` (chat, true), ``system`` (chat, default system
    prompt), ``sizes`` / ``size`` (image), ``response_format`` (image, legacy ``url``),
    ``partial_images`` (image), ``expected_chars`` (chat progress estimate),
    ``retry_base_delay_seconds`` (0.5), ``retry_max_delay_seconds`` (8),
    ``max_retry_after_seconds`` (60)."""

    def __init__(self, spec: ToolSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.spec = spec
        r = SettingsReader(spec.id, spec.kind, spec.settings)
        self.mode: str = r.choice("mode", ("chat", "image"), "chat")
        self.base_url: str = r.string("base_url", "https://api.openai.com/v1").rstrip("/")
        self._api_key: str | None = r.string("api_key", None)
        self._api_key_env: str = r.string("api_key_env", "OPENAI_API_KEY")
        if self._api_key and r.has("api_key_env"):
            raise r.error("api_key", "and 'api_key_env' are exclusive")
        default_model = "gpt-4o-mini" if self.mode == "chat" else "gpt-image-1.5"
        self.model: str = r.string("model", default_model)
        self.max_retries: int = r.number("max_retries", 3, minimum=0, integer=True)
        self.timeout: float = r.number("timeout_seconds", 60.0, minimum=0.001)
        self._extra_body: dict[str, Any] = dict(r.mapping("extra_body", {}))
        self._stream: bool = bool(r.raw("stream", True)) if self.mode == "chat" else False
        self._system: str | None = r.string("system", None) if self.mode == "chat" else None
        self._expected_chars: float = r.number("expected_chars", 400, minimum=1)
        self._sizes: list[str] = list(r.raw("sizes", DEFAULT_SIZES)) if self.mode == "image" else []
        self._size: str | None = r.string("size", self._sizes[0] if self._sizes else None)
        self._response_format: str | None = r.string("response_format", None)
        self._partial_images: int = r.number("partial_images", 0, minimum=0, integer=True)
        self._base_delay: float = r.number("retry_base_delay_seconds", 0.5, minimum=0)
        self._max_delay: float = r.number("retry_max_delay_seconds", 8.0, minimum=0)
        self._max_retry_after: float = r.number("max_retry_after_seconds", 60.0, minimum=0)
        r.finish()
        if self.mode == "image" and (not self._sizes or self._size not in self._sizes):
            raise ToolConfigError(f"tool {spec.id!r}: 'size' must be one of 'sizes' {self._sizes}")
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def input_schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "prompt": {
                "type": "string",
                "title": "Prompt",
                "description": "What to ask the model." if self.mode == "chat" else "What to draw.",
                "minLength": 1,
            }
        }
        if self.mode == "chat":
            properties["system"] = {
                "type": "string",
                "title": "System prompt",
                "description": "Instructions that frame the answer (optional).",
            }
            if self._system:
                properties["system"]["default"] = self._system
            properties["temperature"] = {
                "type": "number",
                "title": "Temperature",
                "description": "Higher is more varied; leave unset for the model's default.",
                "minimum": 0,
                "maximum": 2,
            }
        else:
            properties["size"] = {
                "type": "string",
                "title": "Size",
                "enum": list(self._sizes),
                "default": self._size,
            }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.spec.title,
            "type": "object",
            "additionalProperties": False,
            "required": ["prompt"],
            "properties": properties,
        }

    # -- Tool -----------------------------------------------------------------------------

    async def run(self, ctx: RunContext) -> list[StoredOutput]:
        inputs = validate_inputs(self.input_schema, ctx.inputs)
        if self.mode == "chat":
            return [await self._chat(ctx, inputs)]
        return [await self._image(ctx, inputs)]

    async def reattach(self, ctx: RunContext) -> list[StoredOutput] | None:
        if ctx.request_sent:
            return None  # the answer went to a connection that no longer exists (and cost money)
        return await self.run(ctx)  # nothing went upstream yet: running it is safe

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- HTTP with retries ----------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), transport=self._transport)
        return self._client

    def _auth(self) -> dict[str, str]:
        key = self._api_key or os.environ.get(self._api_key_env)
        if not key:
            raise ToolError(
                f"no OpenAI API key: set ${self._api_key_env} or the tool's api_key setting",
                code="upstream_unauthorized",
            )
        return {"Authorization": f"Bearer {key}"}

    async def _open(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST and return the (streaming, unread) 2xx response; the caller closes it."""
        client, headers = self._http(), self._auth()
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            answer: httpx.Headers | None = None
            request = client.build_request("POST", url, json=body, headers=headers)
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                error = ToolError(
                    f"OpenAI did not answer {path} within {self.timeout}s ({type(exc).__name__})",
                    code="upstream_timeout",
                )
                retry = True
            except httpx.TransportError as exc:
                error = ToolError(f"cannot reach OpenAI at {url}: {exc!r}", code="upstream_unavailable")
                retry = True
            else:
                if response.is_success:
                    return response
                try:
                    raw = await response.aread()
                except httpx.HTTPError:
                    raw = b""
                finally:
                    await response.aclose()
                answer = response.headers
                error = status_error(response.status_code, raw, answer)
                retry = _should_retry(response.status_code, raw, answer)
            delay = retry_delay(
                answer,
                attempt,
                base=self._base_delay,
                cap=self._max_delay,
                max_retry_after=self._max_retry_after,
                jitter=random.random(),
            )
            if not retry or delay is None or attempt >= self.max_retries:
                raise error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _events(self, response: httpx.Response, what: str) -> AsyncGenerator[SSEEvent, None]:
        """SSE events of ``response``; transport failures mapped, the response closed."""
        decoder = SSEDecoder()
        rid = response.headers.get("x-request-id")
        where = f" (request id {rid})" if rid else ""
        try:
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    yield event
            for event in decoder.close():
                yield event
        except httpx.TimeoutException as exc:
            raise ToolError(
                f"OpenAI {what} stream stalled for {self.timeout}s{where}", code="upstream_timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise ToolError(
                f"OpenAI {what} stream broke off: {exc}{where}", code="upstream_protocol_error"
            ) from exc
        finally:
            await response.aclose()

    @staticmethod
    def _payload(data: str, rid: str | None) -> dict[str, Any]:
        where = f" (request id {rid})" if rid else ""
        try:
            payload = json.loads(data)
        except ValueError:
            raise ToolError(f"OpenAI sent malformed JSON in a stream{where}", code="upstream_protocol_error") from None
        if not isinstance(payload, dict):
            raise ToolError(f"OpenAI sent a non-object stream event{where}", code="upstream_protocol_error")
        error = payload.get("error")
        if isinstance(error, dict) or payload.get("type") == "error":
            fields = error if isinstance(error, dict) else payload
            kind = fields.get("type") if fields is error else fields.get("code")
            raise ToolError(
                f"OpenAI reported an error mid-stream: {fields.get('message')} [type={kind}]{where}",
                code=STREAM_ERROR_CODES.get(str(kind), "upstream_protocol_error"),
            )
        return payload

    # -- chat -------------------------------------------------------------------------------

    async def _chat(self, ctx: RunContext, inputs: dict[str, Any]) -> StoredOutput:
        messages = []
        if inputs.get("system"):
            messages.append({"role": "system", "content": inputs["system"]})
        messages.append({"role": "user", "content": inputs["prompt"]})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if "temperature" in inputs:
            body["temperature"] = inputs["temperature"]
        if self._stream:
            body.update(stream=True, stream_options={"include_usage": True})
        body.update(self._extra_body)
        await ctx.progress(0.0, message=f"Asking {self.model}")
        await ctx.mark_request_sent()
        response = await self._open("/chat/completions", body)
        rid = response.headers.get("x-request-id")
        if not self._stream:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            payload = self._payload(raw.decode("utf-8", "replace"), rid)
            try:
                text = payload["choices"][0]["message"].get("content") or ""
            except (KeyError, IndexError, TypeError, AttributeError):
                raise ToolError("OpenAI answer has no choices[0].message", code="upstream_protocol_error") from None
            return await self._store_text(ctx, text)
        text, done = "", False
        # aclosing: a cancel or an error while we publish progress still closes the stream
        async with contextlib.aclosing(self._events(response, "chat")) as events:
            async for event in events:
                if event.data.startswith("[DONE]"):
                    done = True
                    break
                payload = self._payload(event.data, rid)
                for choice in payload.get("choices") or []:
                    delta = (choice.get("delta") or {}) if choice.get("index", 0) == 0 else {}
                    piece = (delta.get("content") or "") + (delta.get("refusal") or "")
                    if piece:
                        text += piece
                        fraction = 0.95 * (1 - math.exp(-len(text) / self._expected_chars))
                        await ctx.progress(fraction, partial_text=text)
        if not done:
            raise ToolError(
                f"OpenAI chat stream ended without [DONE] after {len(text)} characters",
                code="upstream_protocol_error",
            )
        return await self._store_text(ctx, text)

    async def _store_text(self, ctx: RunContext, text: str) -> StoredOutput:
        stored = await ctx.store_output(text.encode(), kind="text", media_type=TEXT_MEDIA_TYPE, filename="answer.txt")
        return dataclasses.replace(stored, text=text)

    # -- image ------------------------------------------------------------------------------

    async def _image(self, ctx: RunContext, inputs: dict[str, Any]) -> StoredOutput:
        body: dict[str, Any] = {"model": self.model, "prompt": inputs["prompt"], "n": 1}
        if inputs.get("size"):
            body["size"] = inputs["size"]
        if self._response_format:
            body["response_format"] = self._response_format
        if self._partial_images:
            body.update(stream=True, partial_images=self._partial_images)
        body.update(self._extra_body)
        await ctx.progress(0.0, message=f"Generating with {self.model}")
        await ctx.mark_request_sent()
        response = await self._open("/images/generations", body)
        rid = response.headers.get("x-request-id")
        if self._partial_images:
            data = await self._image_stream(ctx, response, rid)
        else:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            payload = self._payload(raw.decode("utf-8", "replace"), rid)
            try:
                item = payload["data"][0]
            except (KeyError, IndexError, TypeError):
                raise ToolError("OpenAI image answer has no data[0]", code="upstream_protocol_error") from None
            if item.get("b64_json"):
                data = base64.b64decode(item["b64_json"])
            elif item.get("url"):
                await ctx.progress(0.8, message="Downloading the image")
                data = await self._download(item["url"])
            else:
                raise ToolError("OpenAI image answer has neither b64_json nor url", code="upstream_protocol_error")
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = (image.format or "PNG").lower(), image.size
        except (UnidentifiedImageError, OSError):
            raise ToolError("OpenAI returned bytes that are not an image", code="upstream_protocol_error") from None
        return await ctx.store_output(
            data, kind="image", media_type=f"image/{fmt}", filename=f"image.{fmt}", width=width, height=height
        )

    async def _image_stream(self, ctx: RunContext, response: httpx.Response, rid: str | None) -> bytes:
        final: bytes | None = None
        async with contextlib.aclosing(self._events(response, "image")) as events:
            async for event in events:
                if event.data.startswith("[DONE]"):
                    break
                payload = self._payload(event.data, rid)
                kind = payload.get("type") or event.event or ""
                if kind.endswith("partial_image") and payload.get("b64_json"):
                    index = int(payload.get("partial_image_index", 0))
                    await ctx.progress(
                        (index + 1) / (self._partial_images + 1),
                        step=index + 1,
                        total_steps=self._partial_images,
                        message="Partial image",
                        preview=base64.b64decode(payload["b64_json"]),
                        preview_media_type=f"image/{payload.get('output_format') or 'png'}",
                    )
                elif kind.endswith("completed") and payload.get("b64_json"):
                    final = base64.b64decode(payload["b64_json"])
        if final is None:
            raise ToolError("OpenAI image stream ended without a completed image", code="upstream_protocol_error")
        return final

    async def _download(self, url: str) -> bytes:
        # a signed link on another host: never send our API key there
        try:
            response = await self._http().get(url)
        except httpx.TimeoutException as exc:
            raise ToolError(f"image download timed out: {exc!r}", code="upstream_timeout") from exc
        except httpx.TransportError as exc:
            raise ToolError(f"image download failed: {exc!r}", code="upstream_unavailable") from exc
        if not response.is_success:
            raise ToolError(
                f"image download answered HTTP {response.status_code}", code=_status_code(response.status_code)
            )
        return response.content
