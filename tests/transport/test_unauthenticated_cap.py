"""``LIVEGATE_MAX_UNAUTHENTICATED`` (issue 14): sessions that opened and have not sent a valid
``auth`` are capped per process; above the cap the handshake is closed at once with 1013
(asyncapi.yaml ``x-transport-close-codes``), and a slot comes back when one of them
authenticates or goes away. Real ``livegate serve``, real WebSocket clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from livegate.protocol import codec, messages
from livegate.testing.process import GatewayProcess
from livegate.testing.spec_validation import assert_valid_message

CAP = 3


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"LIVEGATE_MAX_UNAUTHENTICATED": str(CAP), "LIVEGATE_AUTH_TIMEOUT": "30"}
    with GatewayProcess(tmp_path_factory.mktemp("unauth"), env=env) as gw:
        yield gw


async def _open(gw: GatewayProcess) -> ClientConnection:
    return await websockets.connect(gw.ws_url, max_queue=None, compression=None, open_timeout=10)


async def _refused(ws: ClientConnection) -> int | None:
    """The close code the server ended this session with (``None``: still open)."""
    try:
        await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        return None
    raise AssertionError("a frame before any auth")


async def _auth(gw: GatewayProcess, ws: ClientConnection, user: str) -> None:
    await ws.send(codec.encode_text(messages.Auth(token=gw.token(user))))
    welcome = assert_valid_message(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome", welcome


@pytest.fixture
async def sockets() -> AsyncIterator[list[ClientConnection]]:
    opened: list[ClientConnection] = []
    yield opened
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


async def test_sessions_waiting_for_auth_are_capped_and_their_slots_come_back(
        gateway: GatewayProcess, sockets: list[ClientConnection]) -> None:
    waiting = [await _open(gateway) for _ in range(CAP)]
    sockets += waiting
    over = await _open(gateway)  # the handshake succeeds, then the server closes it
    sockets.append(over)
    assert await _refused(over) == 1013
    assert over.close_reason == "try again later"

    # An auth gives its slot back: the next session is taken, and stays open.
    await _auth(gateway, waiting[0], "alice")
    taken = await _open(gateway)
    sockets.append(taken)
    again = await _open(gateway)  # CAP waiting again (waiting[1], waiting[2], taken)
    sockets.append(again)
    assert await _refused(again) == 1013

    # A close gives its slot back too.
    # (The server learns of the close from its socket: until then a new session is refused,
    # so open until one stays; the auth at the end proves it is a working session.)
    await waiting[1].close()
    for _ in range(50):
        late = await _open(gateway)
        sockets.append(late)
        try:
            await asyncio.wait_for(late.recv(), 0.3)
        except TimeoutError:
            break  # still open: it got the freed slot
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1013
    else:
        raise AssertionError("the closed session's slot never came back")
    await _auth(gateway, late, "bob")  # and it is a working session
    await _auth(gateway, taken, "carol")
