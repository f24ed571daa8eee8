"""Every bad input gets the contract's answer; nobody else is affected (plus a fuzz run)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from livegate.testing.gateway import running_gateway


async def test_bad_frames_are_answered_with_paths(gateway, connect) -> None:
    probe = await connect()
    await probe.auth(gateway.token("alice"))
    cases = [
        ("{not json", "bad_json", None),
        (b"\x89PNG", "binary_frame", None),
        ('{"type":"subscribe","id":"s1"}', "unknown_type", "$.type"),
        ('{"id":"s2"}', "unknown_type", "$.type"),
        ('{"type":"refresh","id":"r1","token":42}', "invalid_message", "$.token"),
        ('{"type":"ping","id":7}', "invalid_message", "$.id"),
        ('"just a string"', "invalid_message", "$"),
    ]
    for frame, code, path in cases:
        await probe.send(frame)
        error = await probe.recv()
        assert error["type"] == "error" and error["code"] == code and error["fatal"] is False, frame
        assert error.get("path") == path, frame
    assert error.get("id") is None
    await probe.send('{"type":"refresh","id":"r9","token":42}')
    assert (await probe.recv())["id"] == "r9"
    await probe.send({"type": "ping", "id": "still-alive"})
    assert (await probe.recv())["id"] == "still-alive"


async def test_oversized_frame_closes_4400(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, max_frame_bytes=1024) as gw:
        probe = await connect(gw)
        await probe.auth(gw.token("alice"))
        await probe.send(json.dumps({"type": "ping", "id": "x" * 2000}))
        (error,) = await probe.expect_close(4400)
        assert error["code"] == "frame_too_large"


def _fuzz_frames(rng: random.Random, count: int) -> list[str | bytes]:
    valid = ['{"type":"ping"}', '{"type":"refresh","token":"x"}', '{"type":"auth","token":"y"}']
    atoms = ["{", "}", "[", "]", '"', ":", ",", "null", "true", "1e999", "-0", '"type"', '"ping"', '"\\u0000"',
             '"\\ud800"', "\u2028", "🙂", '"id"', '"token"', '"resume"', '{"epoch":1,"offset":-1}']
    frames: list[str | bytes] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:
            base = rng.choice(valid)
            pos = rng.randrange(len(base))
            frames.append(base[:pos] + rng.choice(atoms) + base[pos + 1:])
        elif kind < 0.6:
            frames.append("".join(rng.choice(atoms) for _ in range(rng.randint(1, 12))))
        elif kind < 0.8:
            obj = {"type": rng.choice(["ping", "refresh", "auth", "welcome", "", None, 5]),
                   "id": rng.choice(["", "x" * 70, 5, None, "ok"]),
                   "token": rng.choice([None, 1, "", "a.b.c"]),
                   "resume": rng.choice([None, {}, {"epoch": "e", "offset": -5}, {"epoch": 1, "offset": "x"}, []])}
            frames.append(json.dumps({k: v for k, v in obj.items() if rng.random() < 0.7}))
        else:
            frames.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))))
    return frames


async def test_fuzz_thousands_of_bad_frames(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, rate_limit_per_second=100_000, rate_limit_burst=100_000) as gw:
        rng = random.Random(20261125)
        victim = await connect(gw)
        await victim.auth(gw.token("alice"))
        bystander = await connect(gw)
        await bystander.auth(gw.token("bob"))
        frames = _fuzz_frames(rng, 3000)
        answered = 0
        for frame in frames:
            await victim.send(frame)
            reply = await victim.recv()  # every frame gets exactly one answer, valid per the spec
            assert reply["type"] in {"error", "pong", "refreshed"}, (frame, reply)
            if reply["type"] == "error" and reply["fatal"]:
                # A fatal answer (e.g. a refresh with a bad token) closes; start a new victim.
                victim = await connect(gw)
                await victim.auth(gw.token("alice"))
            answered += 1
        assert answered == len(frames)
        await gw.publish("bob", {"type": "notification", "level": "info", "message": "unaffected"})
        assert (await bystander.recv_type("notification"))["message"] == "unaffected"
        await bystander.send({"type": "ping", "id": "p"})
        assert (await bystander.recv_type("pong"))["id"] == "p"
