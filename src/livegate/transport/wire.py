"""The wire: what the endpoint needs of a WebSocket transport, and what a transport calls.

The endpoint (:class:`livegate.app.ws.Connection`) never knows which transport carries it:
the native one (:mod:`livegate.transport.native`) or ASGI (:mod:`livegate.transport.asgi`).
Both implement :class:`Wire` and drive an :class:`Endpoint`; one conformance suite
(``tests/transport/test_wire_conformance.py``) runs the endpoint's behaviour over each.

Flow control is the transport's: ``writable`` turns ``False`` when the bytes not yet written
reach the transport's high-water mark and back to ``True`` (with a call to
:meth:`Endpoint.drained`) when they fall to its low-water mark. Writing while not writable is
allowed (nothing is lost) but the endpoint queues instead, so its own bounds apply.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

#: Where a wire without a transport buffer of its own (ASGI's awaitable ``send``) stops
#: being writable, and where it is drained again.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class Wire(Protocol):
    """One open WebSocket, as the endpoint sees it."""

    #: ``False`` while the transport holds as many bytes as it should (paused writing).
    writable: bool

    def write(self, text: str) -> None:
        """Send one text message (a JSON frame). Never blocks, never raises."""

    def buffered(self) -> int:
        """Bytes accepted by :meth:`write` and not yet handed to the network."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` after everything written before; then the
        transport finishes the closing handshake (bounded) and calls
        :meth:`Endpoint.connection_lost`."""


class Endpoint(Protocol):
    """What a transport calls on the endpoint it carries (from the event loop, never
    concurrently). After :meth:`connection_lost` it calls nothing more."""

    def open(self) -> None:
        """The handshake is done: called once, before anything else."""

    def text_received(self, data: str) -> None: ...

    def binary_received(self, size: int) -> None: ...

    def drained(self) -> None:
        """The wire became writable again."""

    def connection_lost(self) -> None:
        """The connection is gone (closed by either side, or the peer vanished)."""


Item = TypeVar("Item", str, bytes)


class PendingWrites(Generic[Item]):
    """The write buffer of a wire whose sender task hands items to an awaitable ``send``
    (:mod:`~livegate.transport.asgi`, :mod:`~livegate.transport.sse`): ``writable`` and
    ``buffered`` as a transport's buffer would have them (:data:`HIGH_WATER` /
    :data:`LOW_WATER`), and :meth:`Endpoint.drained` when it empties enough."""

    __slots__ = ("_buffered", "_done", "_pending", "endpoint", "writable")

    def __init__(self) -> None:
        self._pending: list[Item] = []
        self._buffered = 0
        self._done = False
        self.endpoint: Endpoint | None = None
        self.writable = True

    def buffered(self) -> int:
        return self._buffered

    def _push(self, item: Item) -> None:
        self._pending.append(item)
        self._buffered += len(item)
        if self._buffered >= HIGH_WATER:
            self.writable = False

    def _taken(self, size: int) -> None:
        """``size`` bytes of what was pushed reached ``send``."""
        self._buffered -= size
        if not self.writable and self._buffered <= LOW_WATER:
            self.writable = True
            if self.endpoint is not None:
                self.endpoint.drained()


__all__ = ["HIGH_WATER", "LOW_WATER", "Endpoint", "PendingWrites", "Wire"]
