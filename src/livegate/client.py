"""An asyncio Python client of the livegate protocol (asyncapi.yaml), over the WebSocket
(channel ``userStream``) or Server-Sent Events (channel ``sseStream``, ``transport="sse"``).

For backends, CLIs and tests::

    async with LivegateClient("ws://127.0.0.1:8000/v1/ws", token=get_token) as client:
        async for message in client.messages():
            match message:
                case GenerationUpdate(status="queued", queue_position=int(place)): ...  # 1 = next
                case GenerationUpdate(): ...  # .deadline_at, .estimated_wait_seconds, .error
                case Welcome(recovered=False): ...  # history lost: resync over HTTP

    result = await client.cancel("gen_...")  # in-band, from any connection of the user

It authenticates, resumes from its last position after every reconnect (exponential
backoff with full jitter), refreshes the token when the server sends ``tokenExpiring``
through the ``token`` callback, follows the close-code table (reconnect on 4000-4399, at
least 5 s after 4003; on 4401/4402 asks the callback for a *new* token, once: a second
refusal in a row stops; stops on other terminal codes, and on the transport's 1002, 1007
and 1009: the same frames would be refused again) and yields each stream event once,
in order. ``cancel`` sends asyncapi.yaml's ``cancel`` and returns its ``cancelResult``, or
raises :class:`CancelRefused` with the ``error``'s code (``not_found``,
``illegal_transition``, ...). The backoff restarts after every connection that got a ``welcome``;
``max_reconnects`` bounds the attempts in a row that got none.

Streamed text: the client asks for deltas (``auth.textDeltas``) and rebuilds each
generation's text from ``textDelta`` + ``textOffset``; every yielded ``GenerationProgress``
that carries text has ``partial_text`` set to the whole text so far, as before deltas. A
generation joined mid-stream (a fresh connection, ``recovered: false``) takes its prefix from
``GET /v1/generations/{id}`` (``progress.partialText``) through ``fetch_text``; until then
its progress is yielded without ``partial_text``.

Resume sends the position and the ``timestamp`` of the event at it, exactly as received
(``auth.resume.timestamp``; left out when the position is a ``welcome``'s or was reached only
through ``supersedes``): the server then tells a rewound-and-rewritten history from ours
(``recovered: false``) instead of replaying after an offset that now names another event.

Over SSE the same rules hold: ``GET /v1/sse`` with ``Authorization: Bearer`` and
``Last-Event-ID: <epoch>:<offset>`` (and the ``lastEventTimestamp`` query parameter) to
resume, client messages (``refresh``, ``ping``) POSTed to ``/v1/sse/{connectionId}/messages``
(answers on the stream), ``event: close`` carrying the close code, and a refused request
mapped to the close code of its problem ``code`` (:func:`close_code_for_refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import httpx
import msgspec
import websockets
from httpx_sse import SSEError, aconnect_sse
from websockets.exceptions import ConnectionClosed

from livegate.errors import ContractError
from livegate.protocol import codec, http, messages
from livegate.protocol.codes import (
    CLOSE_CODES,
    RECONNECT_CLOSE_CODES,
    TERMINAL_TRANSPORT_CLOSE_CODES,
)
from livegate.protocol.cursor import StreamCursor
from livegate.protocol.messages import (  # the name `messages` is also a method below
    CancelResult,
    GenerationProgress,
    Pong,
    StreamPosition,
)
from livegate.protocol.textdelta import FINAL_STATUSES, TextAssembler

log = logging.getLogger("livegate.client")
T = TypeVar("T")
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
StreamMessage = messages.GenerationUpdate | messages.GenerationProgress | messages.Notification
NEW_TOKEN_CLOSE_CODES = frozenset({CLOSE_CODES["auth_failed"], CLOSE_CODES["token_expired"]})
LONG_BACKOFF_CLOSE_CODES = {CLOSE_CODES["too_many_connections"]: 5.0}
#: Seconds between two fetches of one generation's prefix (the runner saves it ~once a second).
PREFIX_RETRY_SECONDS = 0.5
TextFetcher = Callable[[str], Awaitable[str | None]]
Transport = Literal["websocket", "sse"]
#: An SSE stream silent this long is dead (the server writes a keep-alive every heartbeat
#: interval, 25 s by default; asyncapi.yaml ``x-sse.keepalive`` allows twice that).
SSE_READ_TIMEOUT = 60.0
_REFUSAL_BY_STATUS = {401: "auth_failed", 403: "forbidden", 429: "rate_limited", 503: "unavailable"}


class _Stamped(msgspec.Struct):
    timestamp: str | None = None


_STAMP_DECODER = msgspec.json.Decoder(_Stamped)


def _received_timestamp(frame: str | bytes) -> str | None:
    """A stream event's ``timestamp`` exactly as the frame carries it (the decoded message
    holds a ``datetime``, whose re-encoding may differ in digits or zone spelling; resume
    sends the server's own string back)."""
    try:
        return _STAMP_DECODER.decode(frame).timestamp
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _stamp(value: str | msgspec.UnsetType) -> str | None:
    return value if isinstance(value, str) else None


def sse_url_for(ws_url: str) -> str:
    """The SSE endpoint next to a WebSocket URL: ``wss://h/v1/ws`` -> ``https://h/v1/sse``."""
    url = httpx.URL(ws_url)
    path = url.path[: -len("/ws")] + "/sse" if url.path.endswith("/ws") else url.path
    return str(url.copy_with(scheme="https" if url.scheme == "wss" else "http", path=path))


def close_code_for_refusal(status: int, code: str | None) -> int | None:
    """The close code a refused ``GET /v1/sse`` stands for: the code of the same name as its
    problem ``code`` (``too_many_connections``, ``rate_limited``, ``token_expired``, ...), any
    other ``token_*``/``ticket_invalid`` is ``auth_failed``, ``origin_not_allowed`` is
    ``forbidden``; else by status; ``None`` (the wire failed: reconnect) for the rest."""
    if code in CLOSE_CODES:
        return CLOSE_CODES[code]
    if code is not None and (code.startswith("token_") or code == "ticket_invalid"):
        return CLOSE_CODES["auth_failed"]
    if code == "origin_not_allowed":
        return CLOSE_CODES["forbidden"]
    name = _REFUSAL_BY_STATUS.get(status)
    return CLOSE_CODES[name] if name else None


class ClientStopped(Exception):
    """The client stopped for good (terminal close code, or no new token available)."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class CancelRefused(Exception):
    """The server answered a ``cancel`` with an ``error`` (``code`` as in asyncapi.yaml)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LivegateClient:
    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        resume: messages.StreamPosition | None = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 15.0,
        max_reconnects: int | None = None,
        on_frame: Callable[[str], None] | None = None,
        text_deltas: bool = True,
        fetch_text: TextFetcher | None = None,
        transport: Transport = "websocket",
        sse_url: str | None = None,
    ) -> None:
        self.url = url
        self.transport: Transport = transport
        self.sse_url = sse_url or sse_url_for(url)
        self._token_source = token
        self.cursor = StreamCursor(resume.epoch, resume.offset, _stamp(resume.timestamp)) if resume else StreamCursor()
        self._resume_requested = resume is not None
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_reconnects = max_reconnects
        self.on_frame = on_frame  # every raw frame received (conformance checks)
        self.welcomes: list[messages.Welcome] = []
        self.close_codes: list[int] = []
        self.reconnect_delays: list[float] = []  # each backoff slept, for observability and tests
        self.connected = asyncio.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ws: Any = None
        self._sse: _SsePoster | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._latest_progress: dict[str, int] = {}
        self.text_deltas = text_deltas
        self.texts = TextAssembler()  # each generation's streamed text, from the deltas
        self._fetch_text = fetch_text or self._fetch_snapshot_text
        self._fetched_at: dict[str, float] = {}
        self._pongs: dict[str, asyncio.Future[messages.Pong]] = {}
        self._cancels: dict[str, asyncio.Future[CancelResult]] = {}

    async def __aenter__(self) -> LivegateClient:
        self._task = asyncio.create_task(self._run(), name="livegate-client")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    @property
    def position(self) -> messages.StreamPosition | None:
        """The resume position, with the ``timestamp`` of the event at it when this client
        received that event (asyncapi.yaml ``StreamPosition.timestamp``)."""
        if self.cursor.epoch is None:
            return None
        timestamp = self.cursor.timestamp
        return messages.StreamPosition(epoch=self.cursor.epoch, offset=self.cursor.offset,
                                       timestamp=msgspec.UNSET if timestamp is None else timestamp)

    async def messages(self) -> AsyncIterator[Any]:
        """Yield ``Welcome`` (one per connection), stream events (once each, in order) and
        non-fatal ``Error``s; raise :class:`ClientStopped` when the client stops."""
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def next_message(self, timeout: float = 10.0) -> Any:
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def ping(self, timeout: float = 5.0) -> Pong:
        request_id = f"p{next(self._ids)}"
        future: asyncio.Future[Pong] = asyncio.get_running_loop().create_future()
        self._pongs[request_id] = future
        await self._send(messages.Ping(id=request_id))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pongs.pop(request_id, None)

    async def cancel(self, generation_id: str, timeout: float = 20.0) -> CancelResult:
        """Cancel one of the user's generations over the stream (asyncapi.yaml ``cancel``);
        raises :class:`CancelRefused` (``not_found``, ``illegal_transition``, ...)."""
        request_id = f"c{next(self._ids)}"
        future: asyncio.Future[CancelResult] = asyncio.get_running_loop().create_future()
        self._cancels[request_id] = future
        try:
            await self._send(messages.Cancel(id=request_id, generation_id=generation_id))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._cancels.pop(request_id, None)

    async def _token(self) -> str:
        source = self._token_source
        if isinstance(source, str):
            return source
        value = source()
        return await value if inspect.isawaitable(value) else value

    async def _send(self, message: Any) -> None:
        if self._sse is not None:
            await self._sse.post(message)
            return
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(codec.encode_text(message))

    async def _run(self) -> None:
        attempt = 0  # connections in a row that ended without a welcome
        refused_token = False  # the previous connection ended with 4401/4402
        try:
            while True:
                welcomes_before = len(self.welcomes)
                code = await self._connect_once()
                self.connected.clear()
                welcomed = len(self.welcomes) > welcomes_before
                if code is not None:
                    self.close_codes.append(code)
                if code in NEW_TOKEN_CLOSE_CODES:
                    if isinstance(self._token_source, str):
                        raise ClientStopped(f"closed with {code}: a new token is needed", code)
                    if refused_token and not welcomed:
                        raise ClientStopped(f"closed with {code} again: the new token was refused too", code)
                    refused_token = True
                else:
                    refused_token = False
                if code is not None and code not in RECONNECT_CLOSE_CODES and code not in NEW_TOKEN_CLOSE_CODES \
                        and (code >= 4400 or code in TERMINAL_TRANSPORT_CLOSE_CODES):
                    raise ClientStopped(f"closed with terminal code {code}", code)
                attempt = 1 if welcomed else attempt + 1
                if self.max_reconnects is not None and attempt > self.max_reconnects:
                    raise ClientStopped(f"gave up after {self.max_reconnects} reconnects", code)
                # Full jitter (AWS architecture blog): sleep U(0, min(cap, base * 2^n)).
                delay = random.uniform(0, min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 10)))
                delay = max(delay, LONG_BACKOFF_CLOSE_CODES.get(code or 0, 0.0))
                self.reconnect_delays.append(delay)
                await asyncio.sleep(delay)
        except ClientStopped as exc:
            await self._queue.put(exc)
        except Exception as exc:  # never die silently
            await self._queue.put(ClientStopped(f"client failed: {exc!r}"))

    async def _with_text(self, message: GenerationProgress) -> GenerationProgress:
        """``message`` with ``partial_text`` = the generation's whole text so far, rebuilt
        from its ``textDelta`` (asyncapi.yaml, "Streamed text")."""
        gen_id = message.generation_id
        if isinstance(message.text_delta, str) and isinstance(message.text_offset, int):
            text = self.texts.apply(gen_id, message.offset, message.text_offset, message.text_delta)
            if text is None and time.monotonic() - self._fetched_at.get(gen_id, -1e9) >= PREFIX_RETRY_SECONDS:
                self._fetched_at[gen_id] = time.monotonic()
                with contextlib.suppress(Exception):  # the next delta asks again
                    prefix = await self._fetch_text(gen_id)
                    text = self.texts.seed(gen_id, prefix) if prefix is not None else None
        elif isinstance(message.partial_text, str):  # a publisher that sends whole texts
            self.texts.replace(gen_id, message.offset, message.partial_text)
            return message
        else:
            text = self.texts.text(gen_id)
        return message if text is None else msgspec.structs.replace(message, partial_text=text)

    async def _fetch_snapshot_text(self, generation_id: str) -> str | None:
        """The text so far from ``GET /v1/generations/{id}`` (``progress.partialText``) on the
        gateway of ``url``; ``None`` when it has none (not running any more, no text yet)."""
        base = self.url.replace("wss://", "https://", 1).replace("ws://", "http://", 1).removesuffix("/v1/ws")
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            response = await http.get(f"/v1/generations/{generation_id}",
                                      headers={"authorization": f"Bearer {await self._token()}"})
        if response.status_code != 200:
            return None
        text = (response.json().get("progress") or {}).get("partialText")
        return text if isinstance(text, str) else None
    def _resume_position(self) -> StreamPosition | None:
        return self.position if (self._resume_requested or self.welcomes) else None

    async def _connect_once(self) -> int | None:
        if self.transport == "sse":
            return await self._connect_sse_once()
        try:
            async with websockets.connect(self.url, open_timeout=10, max_size=2**24, compression=None) as ws:
                self._ws = ws
                auth = messages.Auth(id=f"a{next(self._ids)}", token=await self._token(),
                                     resume=self._resume_position() or msgspec.UNSET,
                                     text_deltas=True if self.text_deltas else msgspec.UNSET)
                await ws.send(codec.encode_text(auth))
                async for frame in ws:
                    await self._handle(frame)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            log.info("connect failed: %r", exc)
            return None
        finally:
            self._ws = None
        return None

    async def _connect_sse_once(self) -> int | None:
        """One ``GET /v1/sse`` (asyncapi.yaml ``sseStream``, openapi.yaml ``openSseStream``):
        the close code of its ``close`` event or refusal, ``None`` when the link was cut."""
        token = await self._token()
        headers = {"Authorization": f"Bearer {token}"}
        params = {"textDeltas": "true"} if self.text_deltas else {}  # auth.textDeltas, over SSE
        position = self._resume_position()
        if position is not None:
            headers["Last-Event-ID"] = f"{position.epoch}:{position.offset}"
            if isinstance(position.timestamp, str):  # auth.resume.timestamp, over SSE
                params["lastEventTimestamp"] = position.timestamp
        timeout = httpx.Timeout(10.0, read=SSE_READ_TIMEOUT)
        try:
            async with httpx.AsyncClient(timeout=timeout) as http, \
                    aconnect_sse(http, "GET", self.sse_url, headers=headers, params=params) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
                    return close_code_for_refusal(response.status_code, problem.get("code"))
                self._sse = _SsePoster(http, self, token)
                async for event in source.aiter_sse():
                    if not event.data:
                        continue  # the `retry:` preamble: our backoff is our own
                    if event.event == "close":
                        return int(msgspec.json.decode(event.data, type=messages.SseClose).code)
                    await self._handle(event.data)
        except (httpx.HTTPError, SSEError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.info("SSE stream failed: %r", exc)
        finally:
            self._sse = None
        return None

    async def _handle(self, frame: str | bytes) -> None:
        if self.on_frame is not None:
            self.on_frame(frame if isinstance(frame, str) else frame.decode())
        try:
            message = codec.decode_server(frame)
        except ContractError as exc:
            log.warning("unknown or invalid server frame: %s", exc.message)
            return
        match message:
            case messages.Welcome():
                self.welcomes.append(message)
                if message.recovered is not True:
                    self.cursor.reset(message.epoch, message.offset)
                    self._latest_progress.clear()
                    self.texts = TextAssembler()  # offsets restart: a text continues only from a prefix
                self.connected.set()
                await self._queue.put(message)
            case messages.GenerationUpdate() | messages.GenerationProgress() | messages.Notification():
                supersedes = getattr(message, "supersedes", None) or ()
                if self.cursor.accept(message.epoch, message.offset, supersedes if isinstance(supersedes, list) else (),
                                      timestamp=_received_timestamp(frame)):
                    if isinstance(message, messages.GenerationProgress):
                        # A replay after a conflation hole may bring an older progress: skip it.
                        if self._latest_progress.get(message.generation_id, 0) > message.offset:
                            return
                        self._latest_progress[message.generation_id] = message.offset
                        message = await self._with_text(message)
                    elif isinstance(message, messages.GenerationUpdate) and message.status in FINAL_STATUSES:
                        self.texts.forget(message.generation_id)
                        self._fetched_at.pop(message.generation_id, None)
                    await self._queue.put(message)
            case messages.TokenExpiring():
                with contextlib.suppress(Exception):
                    await self._send(messages.Refresh(id=f"r{next(self._ids)}", token=await self._token()))
            case messages.Pong():
                future = self._pongs.get(message.id) if isinstance(message.id, str) else None
                if future is not None and not future.done():
                    future.set_result(message)
            case messages.CancelResult():
                waiting = self._cancels.get(message.id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
            case messages.Refreshed():
                pass
            case messages.Error():
                refused = self._cancels.get(message.id) if isinstance(message.id, str) else None
                if refused is not None and not refused.done():
                    refused.set_exception(CancelRefused(message.code, message.message))
                    return  # answered to its caller, not a stream error
                await self._queue.put(message)


class GenerationsClient:
    """The generations half of openapi.yaml over HTTP, typed with the generated structs::

        async with GenerationsClient("http://127.0.0.1:8000", token) as api:
            run = await api.create("demo", {"prompt": "a kite"}, webhook_url="https://example.com/hook")
            deliveries = await api.webhooks(run.id)   # pending / delivered / failed, per endpoint

    A problem answer (4xx/5xx) raises :class:`ApiProblem` with the contract's ``code``.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        import httpx

        self._http = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                       timeout=timeout)

    async def __aenter__(self) -> GenerationsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create(self, tool_id: str, inputs: dict[str, Any], *, webhook_url: str | None = None,
                     webhook_events: list[str] | None = None) -> http.Generation:
        """openapi.yaml ``createGeneration``; ``webhook_url`` only where the deployment allows it."""
        body: dict[str, Any] = {"toolId": tool_id, "inputs": inputs}
        if webhook_url is not None:
            body["webhookUrl"] = webhook_url
        if webhook_events is not None:
            body["webhookEvents"] = webhook_events
        return await self._call("POST", "/v1/generations", http.Generation, json=body)

    async def get(self, generation_id: str) -> http.Generation:
        """openapi.yaml ``getGeneration``."""
        return await self._call("GET", f"/v1/generations/{generation_id}", http.Generation)

    async def webhooks(self, generation_id: str) -> http.WebhookDeliveryList:
        """openapi.yaml ``listGenerationWebhooks``: each delivery's status, attempts and last error."""
        return await self._call("GET", f"/v1/generations/{generation_id}/webhooks", http.WebhookDeliveryList)

    async def _call(self, method: str, path: str, answer: type[T], **kwargs: Any) -> T:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            problem = msgspec.json.decode(response.content, type=http.Problem)
            raise ApiProblem(problem)
        return msgspec.json.decode(response.content, type=answer)


class ApiProblem(Exception):
    """An RFC 9457 problem answer of the HTTP API (``problem.code`` is a ProblemCode)."""

    def __init__(self, problem: http.Problem) -> None:
        super().__init__(f"{problem.status} {problem.code}: {problem.detail or problem.title}")
        self.problem = problem
        self.code = problem.code
class _SsePoster:
    """Client messages of one SSE connection: ``POST /v1/sse/{connectionId}/messages``
    (openapi.yaml ``sendSseMessage``) with the latest token; the answers come on the stream."""

    def __init__(self, http: httpx.AsyncClient, client: LivegateClient, token: str) -> None:
        self.http = http
        self.client = client
        self.token = token

    async def post(self, message: Any) -> None:
        if not self.client.welcomes:
            raise ConnectionError("no welcome yet")
        if isinstance(message, messages.Refresh):
            self.token = message.token  # the credential of this connection from now on
        connection_id = self.client.welcomes[-1].connection_id
        response = await self.http.post(
            f"{self.client.sse_url}/{connection_id}/messages", content=codec.encode_text(message),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        if response.status_code != 202:
            raise ConnectionError(f"POST {response.url} answered {response.status_code}")
