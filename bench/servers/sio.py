"""The framework most Python teams would pick: python-socketio (ASGI) on uvicorn + uvloop.

Same job as the floor: JWT in the Socket.IO ``auth`` payload, one room per user, per-user
offsets, ``sio.emit(..., room=user)`` per event (python-socketio encodes once per emit).
``POST /v1/events`` (livegate's body) is a plain ASGI route next to the Socket.IO app.

    python bench/servers/sio.py --port P --secret S --service-token T
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

import jwt
import msgspec
import socketio
import uvicorn


class PublishItem(msgspec.Struct):
    userId: str  # the wire name
    event: dict[str, Any]


class PublishBody(msgspec.Struct):
    events: list[PublishItem]


def build(secret: str, service_token: str) -> Any:
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[], ping_interval=25, ping_timeout=20)
    offsets: dict[str, int] = {}
    epoch = secrets.token_hex(8)
    decoder = msgspec.json.Decoder(PublishBody)
    encoder = msgspec.json.Encoder()
    expected_auth = b"bearer " + service_token.encode()

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        try:
            user = jwt.decode((auth or {}).get("token", ""), secret, algorithms=["HS256"])["sub"]
        except Exception:
            return False
        await sio.enter_room(sid, user)
        return True

    async def publish_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] != "/v1/events" or headers.get(b"authorization", b"").lower() != expected_auth:
            status, out = 401, b'{"code":"unauthorized"}'
        else:
            batch = decoder.decode(body)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            results = []
            for item in batch.events:
                offset = offsets.get(item.userId, 0) + 1
                offsets[item.userId] = offset
                await sio.emit("event", {"epoch": epoch, "offset": offset, "timestamp": stamp, **item.event},
                               room=item.userId)
                results.append({"userId": item.userId, "epoch": epoch, "offset": offset})
            status, out = 200, encoder.encode({"results": results})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return socketio.ASGIApp(sio, other_asgi_app=publish_app)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--service-token", required=True)
    parser.add_argument("--ws", default="websockets-sansio")
    args = parser.parse_args()
    uvicorn.run(build(args.secret, args.service_token), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", ws=args.ws, log_level="warning", access_log=False, lifespan="off")
