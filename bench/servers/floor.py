"""The floor: a hand-written ``websockets`` (+ uvloop, msgspec) server for the same job.

What Python can do with no framework: JWT ``auth`` as the first frame, per-user offsets,
one encode per event, ``websockets.broadcast`` of the same bytes to every connection of the
user. No history, no resume, no backpressure, no validation beyond msgspec's decode. The
publish API is ``POST /v1/events`` (same body as livegate's) on a second port, served by a
minimal keep-alive HTTP/1.1 handler in the same event loop (websockets serves GET only).

    python bench/servers/floor.py --port P --publish-port Q --secret S --service-token T
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

import jwt
import msgspec
import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, serve


class PublishItem(msgspec.Struct):
    userId: str  # the wire name
    event: dict[str, Any]


class PublishBody(msgspec.Struct):
    events: list[PublishItem]


class Auth(msgspec.Struct):
    type: str
    token: str


class Floor:
    def __init__(self, secret: str, service_token: str) -> None:
        self.secret = secret
        self.service_auth = b"bearer " + service_token.encode()
        self.by_user: dict[str, set[ServerConnection]] = {}
        self.offsets: dict[str, int] = {}
        self.epoch = secrets.token_hex(8)
        self.encoder = msgspec.json.Encoder()
        self.body_decoder = msgspec.json.Decoder(PublishBody)
        self.auth_decoder = msgspec.json.Decoder(Auth)

    async def handler(self, ws: ServerConnection) -> None:
        try:
            first = await asyncio.wait_for(ws.recv(), 5)
            auth = self.auth_decoder.decode(first)
            user = jwt.decode(auth.token, self.secret, algorithms=["HS256"])["sub"]
        except Exception:
            await ws.close(4401, "auth failed")
            return
        conns = self.by_user.setdefault(user, set())
        conns.add(ws)
        try:
            await ws.send(self.encoder.encode({"type": "welcome", "userId": user}).decode())
            async for _ in ws:  # nothing expected from clients; keep reading for pings/close
                pass
        finally:
            conns.discard(ws)
            if not conns:
                self.by_user.pop(user, None)

    def publish(self, body: bytes) -> bytes:
        batch = self.body_decoder.decode(body)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        results = []
        for item in batch.events:
            user = item.userId
            offset = self.offsets.get(user, 0) + 1
            self.offsets[user] = offset
            frame = self.encoder.encode({"epoch": self.epoch, "offset": offset, "timestamp": stamp, **item.event})
            conns = self.by_user.get(user)
            if conns:
                websockets.broadcast(conns, frame, text=True)
            results.append({"userId": user, "epoch": self.epoch, "offset": offset})
        return self.encoder.encode({"results": results})

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                authorized = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"authorization":
                        authorized = value.strip().lower() == self.service_auth
                body = await reader.readexactly(length)
                if not authorized:
                    out, status = b'{"code":"unauthorized"}', b"401 Unauthorized"
                else:
                    out, status = self.publish(body), b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(out)).encode() + b"\r\n\r\n" + out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(args: argparse.Namespace) -> None:
    floor = Floor(args.secret, args.service_token)
    http = await asyncio.start_server(floor.http, "127.0.0.1", args.publish_port)
    async with serve(floor.handler, "127.0.0.1", args.port, compression=None, max_size=64 * 1024,
                     ping_interval=25, ping_timeout=20, server_header=None), http:
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--publish-port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--service-token", required=True)
    uvloop.run(main(parser.parse_args()))
