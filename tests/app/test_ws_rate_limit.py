"""Inbound rate limit per connection, answered per the contract: dropped frames get
``error rate_limited`` (non-fatal, id echoed); sustained excess closes with 4004."""

from __future__ import annotations

from pathlib import Path

from livegate.testing.gateway import running_gateway


async def test_rate_limited_then_closed_4004_and_others_unaffected(tmp_path: Path, connect) -> None:
    # A burst of 3 and a refill so slow that no token comes back during the test.
    async with running_gateway(tmp_path, rate_limit_per_second=0.001, rate_limit_burst=3) as gw:
        bystander = await connect(gw)
        await bystander.auth(gw.token("bob"))
        probe = await connect(gw)
        await probe.auth(gw.token("alice"))
        for i in range(3):
            await probe.send({"type": "ping", "id": f"ok{i}"})
            assert (await probe.recv())["type"] == "pong"
        for i in range(3):  # over the limit: dropped, answered, connection kept
            await probe.send({"type": "ping", "id": f"x{i}"})
            error = await probe.recv()
            assert (error["type"], error["code"], error["fatal"], error["id"]) == ("error", "rate_limited", False,
                                                                                    f"x{i}")
        await probe.send({"type": "ping", "id": "last"})
        (error,) = await probe.expect_close(4004)
        assert error["code"] == "rate_limited" and error["fatal"] is True and error["id"] == "last"
        await bystander.send({"type": "ping", "id": "b"})
        assert (await bystander.recv())["id"] == "b"


async def test_rate_limit_counts_binary_and_bad_frames_too(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, rate_limit_per_second=0.001, rate_limit_burst=2) as gw:
        probe = await connect(gw)
        await probe.auth(gw.token("alice"))
        await probe.send(b"\x00")
        assert (await probe.recv())["code"] == "binary_frame"
        await probe.send("{nope")
        assert (await probe.recv())["code"] == "bad_json"
        await probe.send({"type": "ping", "id": "p"})
        error = await probe.recv()
        assert error["code"] == "rate_limited" and error["fatal"] is False
