"""A fake OpenAI API on a local port, answering from ``tests/fixtures/openai`` (see its
README: the fixtures are *constructed* from the official SDK's types, not captured).

* ``POST /v1/chat/completions``: with ``"stream": true`` the ``.sse`` fixture bytes are
  replayed verbatim, cut at odd byte boundaries, with the headers of
  ``response_headers.json``; ``stream_options.include_usage`` picks the usage variant;
  without ``stream`` a ``chat.completion`` object built from the same chunks.
* ``POST /v1/images/generations``: ``b64_json`` (GPT image models), or the legacy ``url``
  shape when the request says ``"response_format": "url"`` — the URL points at
  ``GET /files/<name>`` on this fake, which serves the PNG. ``"stream": true`` replays the
  partial-image stream.
* Errors exactly as ``errors/*.json`` (status, headers such as ``retry-after``, body): a
  wrong ``Authorization`` gives the 401, a model in :attr:`FakeOpenAI.unknown_models` the
  404, and :meth:`FakeOpenAI.fail_next` queues any of them before success.

Knobs for failure tests: :attr:`hang` (never answer), :attr:`hang_after_events` (stall
mid-stream), :attr:`cut_after_events` (drop the connection mid-event), :attr:`chat_fixture`.
Every request is recorded in :attr:`requests`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

from livegate.testing._server import BackgroundServer, find_fixtures_dir

__all__ = ["FakeOpenAI", "RecordedRequest", "long_stream", "main"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _split_events(raw: bytes) -> list[bytes]:
    """The SSE body split after each blank line (every fixture uses ``\\n`` endings)."""
    parts = raw.split(b"\n\n")
    events = [part + b"\n\n" for part in parts[:-1]]
    if parts[-1]:
        events.append(parts[-1])
    return events


class FakeOpenAI:
    """``async with FakeOpenAI(fixtures_dir) as fake: ... fake.base_url + "/v1"``."""

    def __init__(
        self,
        fixtures_dir: str | Path | None = None,
        *,
        api_key: str = "sk-test",
        host: str = "127.0.0.1",
        port: int = 0,
        chunk_sizes: tuple[int, ...] = (1, 7, 13, 29, 3, 61, 2),
        chunk_delay: float = 0.0,
    ) -> None:
        root = Path(fixtures_dir) if fixtures_dir else find_fixtures_dir("openai")
        self.api_key = api_key
        self.chunk_sizes = chunk_sizes
        self.chunk_delay = chunk_delay
        self.chat_fixture: str | None = None
        self.unknown_models: set[str] = {"gpt-nonexistent"}
        self.hang = False
        self.hang_after_events: int | None = None
        self.cut_after_events: int | None = None
        self.requests: list[RecordedRequest] = []
        self.stream_disconnects = 0  # streams the client abandoned before their end
        self._failures: deque[tuple[str, dict[str, str]]] = deque()
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        chat = root / "chat_completions"
        self.sse = {p.name.removesuffix(".response.sse"): p.read_bytes() for p in chat.glob("*.sse")}
        self.stream_headers: dict[str, str] = _load(chat / "response_headers.json")["headers"]
        self.errors = {p.stem: _load(p) for p in (root / "errors").glob("*.json")}
        images = root / "images"
        self.image_b64 = _load(images / "generations_b64_json.response.json")
        self.image_url = _load(images / "generations_url_legacy.response.json")
        self.image_stream = (images / "generations_stream.response.sse").read_bytes()
        self.png = base64.b64decode(self.image_b64["body"]["data"][0]["b64_json"])
        self._server = BackgroundServer(self._app(), host=host, port=port)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        self._closing.set()  # releases hanging handlers so that uvicorn can shut down
        await self._server.stop()

    @property
    def base_url(self) -> str:
        return self._server.base_url

    # -- knobs --------------------------------------------------------------------------

    def long_answer(self, tokens: int, *, seconds: float = 0.0, name: str = "long") -> str:
        """Make chat streams answer ``tokens`` content chunks (in the ``stream_basic``
        fixture's own chunk format; words, accents, CJK and emoji outside the BMP), paced to
        take about ``seconds``. Returns the whole answer text."""
        body, text = long_stream(self.sse["stream_basic"], tokens)
        self.sse[name] = body
        self.chat_fixture = name
        if seconds > 0:
            self.chunk_sizes = (64,)
            self.chunk_delay = seconds / max(1, len(body) // 64)
        return text

    def fail_next(
        self, error: str, times: int = 1, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer the next ``times`` API calls with ``errors/<error>.json``; ``headers``
        are merged over the fixture's (e.g. ``{"retry-after-ms": "20"}``)."""
        if error not in self.errors:
            raise ValueError(f"unknown error fixture {error!r}; known: {sorted(self.errors)}")
        self._failures.extend([(error, dict(headers or {}))] * times)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.requests) >= count, timeout)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Until ``condition()`` holds (re-checked on every request and stream end)."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- responses ----------------------------------------------------------------------

    def _error(self, name: str, extra_headers: Mapping[str, str] | None = None) -> Response[bytes]:
        fixture = self.errors[name]
        headers = {k: v for k, v in fixture["headers"].items() if k != "content-type"}
        headers.update(extra_headers or {})
        return Response(
            json.dumps(fixture["body"]).encode(),
            status_code=fixture["status"],
            media_type=fixture["headers"].get("content-type", "application/json"),
            headers=headers,
        )

    def _chunks(self, raw: bytes) -> list[bytes]:
        sizes = itertools.cycle(self.chunk_sizes)
        chunks, offset = [], 0
        while offset < len(raw):
            size = next(sizes)
            chunks.append(raw[offset : offset + size])
            offset += size
        return chunks

    def _stream(self, raw: bytes) -> Stream:
        events = _split_events(raw)
        cut, hang = self.cut_after_events, self.hang_after_events
        if cut is not None:
            # the first `cut` events whole, then half of the next one, then the socket dies
            body = b"".join(events[:cut]) + events[min(cut, len(events) - 1)][:9]
        elif hang is not None:
            body = b"".join(events[:hang])
        else:
            body = raw

        async def generate() -> AsyncIterator[bytes]:
            finished = False
            try:
                for chunk in self._chunks(body):
                    yield chunk
                    await asyncio.sleep(self.chunk_delay)
                if cut is not None:
                    raise ConnectionAbortedError("fake: connection cut mid-stream")
                if hang is not None:
                    await self._closing.wait()
                finished = True
            finally:
                if not finished and cut is None:
                    self.stream_disconnects += 1
                    self._notify()

        headers = {k: v for k, v in self.stream_headers.items() if k != "content-type"}
        return Stream(generate(), media_type="text/event-stream", headers=headers)

    async def _admit(self, request: Request[Any, Any, Any]) -> tuple[Any, Response[bytes] | None]:
        """Record the call; return its JSON body and the error to answer with, if any."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        )
        self._notify()
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, self._error("401_invalid_api_key")
        if self.hang:
            await self._closing.wait()
            return body, self._error("500_server_error")
        if self._failures:
            name, headers = self._failures.popleft()
            return body, self._error(name, headers)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return body, _invalid_request("you must provide a model parameter", "model")
        if body["model"] in self.unknown_models:
            return body, self._error("404_model_not_found")
        return body, None

    def _chat(self, body: dict[str, Any]) -> Response[bytes] | Stream:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _invalid_request("'messages' is a required property", "messages")
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        name = self.chat_fixture or ("stream_with_usage" if usage else "stream_basic")
        if body.get("stream"):
            return self._stream(self.sse[name])
        return Response(
            json.dumps(_completion(self.sse["stream_with_usage"])).encode(),
            media_type="application/json",
            headers={k: v for k, v in self.stream_headers.items() if k != "content-type"},
        )

    def _images(self, body: dict[str, Any]) -> Response[bytes] | Stream:
        if not isinstance(body.get("prompt"), str):
            return _invalid_request("'prompt' is a required property", "prompt")
        if body.get("stream"):
            return self._stream(self.image_stream)
        fixture = self.image_b64
        payload = json.loads(json.dumps(fixture["body"]))
        if body.get("response_format") == "url":
            fixture = self.image_url
            payload = json.loads(json.dumps(fixture["body"]))
            for item in payload["data"]:
                query = item["url"].partition("?")[2]
                item["url"] = f"{self.base_url}/files/img-EXAMPLE.png?{query}"
        headers = {k: v for k, v in fixture["headers"].items() if k != "content-type"}
        return Response(json.dumps(payload).encode(), media_type="application/json", headers=headers)

    def _app(self) -> Litestar:
        fake = self

        @post("/v1/chat/completions", status_code=200)
        async def chat(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
            body, refused = await fake._admit(request)
            return refused or fake._chat(body)

        @post("/v1/images/generations", status_code=200)
        async def images(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
            body, refused = await fake._admit(request)
            return refused or fake._images(body)

        @get("/files/{name:str}")
        async def files(request: Request[Any, Any, Any]) -> Response[bytes]:
            # the signed link of the legacy `url` shape: no Authorization needed
            fake.requests.append(RecordedRequest("GET", request.url.path, dict(request.headers), None))
            fake._notify()
            return Response(fake.png, media_type="image/png")

        return Litestar([chat, images, files], openapi_config=None, logging_config=None)


LONG_ANSWER_WORDS = ("The", " lighthouse", " keeper", " counted", " waves", ",", " then", " 🌅", " slept", ".",
                     " Fog", " rolled", " in", " é", "中", " 😀", " again", "\n")


def long_stream(template: bytes, tokens: int) -> tuple[bytes, str]:
    """An SSE body in ``template``'s format (a chat stream fixture) with ``tokens`` content
    chunks, and the answer's text."""
    events = [e for e in template.split(b"\n\n") if e.strip()]
    content = next(e for e in events if b'"content":"Hello"' in e)
    tail = [e for e in events if b'"finish_reason":"stop"' in e or e.startswith(b"data: [DONE]")]
    prefix, suffix = content.split(b'"content":"Hello"')
    out, text = [events[0]], []  # the role chunk first
    for i in range(tokens):
        word = LONG_ANSWER_WORDS[i % len(LONG_ANSWER_WORDS)]
        text.append(word)
        out.append(prefix + b'"content":' + json.dumps(word).encode() + suffix)
    return b"\n\n".join(out + tail) + b"\n\n", "".join(text)


def _load(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def _invalid_request(message: str, param: str) -> Response[bytes]:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return Response(json.dumps(body).encode(), status_code=400, media_type="application/json")


def _completion(raw: bytes) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` with the text and usage of a chunk stream."""
    chunks = [
        json.loads(event.removeprefix(b"data: ").strip())
        for event in _split_events(raw)
        if event.startswith(b"data: {")
    ]
    first = chunks[0]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    finish = next(
        (c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]),
        "stop",
    )
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": first["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": next((c["usage"] for c in chunks if c.get("usage")), None),
        "service_tier": first.get("service_tier"),
        "system_fingerprint": first.get("system_fingerprint"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI API answering from fixtures.")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fixtures", type=Path, default=None, help="tests/fixtures/openai")
    parser.add_argument("--api-key", default="sk-test")
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeOpenAI(args.fixtures, api_key=args.api_key, host=args.host, port=args.port)
        async with fake:
            print(f"fake OpenAI listening on {fake.base_url}/v1 (key {args.api_key})", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
