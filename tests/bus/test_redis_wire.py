"""The channel message format, written by Lua and read by Python, pinned by one shared test
vector (tests/bus/vectors/channel_messages.json) run on both sides: in a real redis-server
(the tests start it) and in the Python parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from livegate.bus.base import PublishItem
from livegate.bus.redis import RedisBus
from livegate.bus.redis.wire import parse_message, script_source
from livegate.testing.redis_server import RedisServer

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "channel_messages.json").read_text(encoding="utf-8"))["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: str(v["offset"]))
def test_python_reads_the_vector(vector: dict[str, Any]) -> None:
    epoch, offset, published_at, key, body = parse_message(vector["message"].encode())
    assert (epoch, offset, published_at, key) == (vector["epoch"], vector["parsed"]["offset"],
                                                   vector["parsed"]["published_at"], vector["parsed"]["key"])
    assert body == vector["body"].encode()


@pytest.mark.redis
async def test_lua_writes_the_vector(redis_server: RedisServer) -> None:
    # The function publish.lua calls, from the same file the bus loads.
    script = script_source("message.lua") + (
        "return channel_message(ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5])")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        for vector in VECTORS:
            written = await client.eval(script, 0, vector["epoch"], vector["offset"], vector["published"],
                                        vector["key"], vector["body"])
            assert written == vector["message"].encode(), vector["offset"]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_what_the_publish_script_sends_is_what_the_parser_reads(redis_server: RedisServer) -> None:
    bus = RedisBus(redis_server.url)
    listener = aioredis.Redis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    try:
        await bus.start()
        await pubsub.subscribe("lg:{vector-user}:c")
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"  # type: ignore[index]
        body = VECTORS[2]["body"].encode()
        (position,) = await bus.publish([PublishItem("vector-user", body, "ü 1\n")])
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        epoch, offset, _published, key, got = parse_message(message["data"])
        assert (epoch, offset, key, got) == (position.epoch, position.offset, "ü 1\n", body)
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await bus.stop()
