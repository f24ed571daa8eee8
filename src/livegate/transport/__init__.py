"""livegate's WebSocket transport: thin I/O layers that pump bytes and timers.

* :mod:`~livegate.transport.wire` — the one small interface the endpoint
  (:class:`livegate.app.ws.Connection`) is written against, and the callbacks a wire makes.
* :mod:`~livegate.transport.native` — an :class:`asyncio.Protocol` over websockets' public
  sans-I/O ``ServerProtocol``; serves ``/v1/ws`` directly (uvicorn hands it the upgrade
  through its public ``ws=`` option). Heartbeat, flow control and frame bytes live here.
* :mod:`~livegate.transport.asgi` — the same wire over Litestar's ``WebSocket`` (any ASGI
  server, test clients).
* :mod:`~livegate.transport.frames` — RFC 6455 frames the native wire writes itself.
* :mod:`~livegate.transport.ticks` — the loop-iteration clock the delivery core is given.
"""

from livegate.transport.wire import Endpoint, Wire

__all__ = ["Endpoint", "Wire"]
