"""One published event is bounded (``LIVEGATE_MAX_EVENT_BYTES``, issue 14): an oversized
item is refused with a 413 problem naming it before anything reaches a stream, so the
user's live connections stay open and a resume replays nothing huge."""

from __future__ import annotations

import httpx

from livegate.testing import gateway as testing_gateway
from livegate.testing.gateway import running_gateway
from tests.app._hostile import assert_problem, no_error_logs

SERVICE = {"Authorization": f"Bearer {testing_gateway.TEST_SERVICE_TOKEN}"}


def note(text: str) -> dict[str, str]:
    return {"type": "notification", "level": "info", "message": text}


async def test_a_5_mb_publish_is_refused_and_live_connections_stay_open(tmp_path, connect) -> None:
    async with running_gateway(tmp_path) as gw:
        probes = [await connect(gw) for _ in range(3)]
        welcomes = [await p.auth(gw.token("alice")) for p in probes]
        with no_error_logs():
            async with httpx.AsyncClient(base_url=gw.http_url, headers=SERVICE, timeout=30) as client:
                response = await client.post("/v1/events", json={"events": [
                    {"userId": "alice", "event": note("small")},
                    {"userId": "alice", "event": note("x" * 5_000_000)},
                    {"userId": "bob", "event": note("y" * 300_000)},
                ]})
        body = assert_problem(response.status_code, response.headers, response.content, {413})
        assert body["code"] == "payload_too_large"
        assert [(e["index"], e["path"]) for e in body["errors"]] == [(1, "$.events[1].event"), (2, "$.events[2].event")]
        # Nothing of the batch was published (not even the small one) ...
        read = await gw.gateway.bus.read("alice", 0)
        assert read.top == welcomes[0]["offset"] == 0
        # ... and every connection is still live: the next event reaches all of them, first.
        await gw.publish("alice", note("after"))
        for probe in probes:
            (event,) = await probe.events(1)
            assert event["message"] == "after" and event["offset"] == 1
            await probe.send({"type": "ping", "id": "p"})
            assert (await probe.recv_type("pong"))["id"] == "p"


async def test_events_up_to_the_limit_pass_and_a_resume_replays_them_within_the_queue_bound(tmp_path, connect) -> None:
    # 12 events of ~60 KB: 720 KB of replay through a 256 KB outbound bound, without a 4001.
    async with running_gateway(tmp_path, max_event_bytes=64 * 1024, queue_max_bytes=256 * 1024) as gw:
        probe = await connect(gw)
        welcome = await probe.auth(gw.token("alice"))
        async with httpx.AsyncClient(base_url=gw.http_url, headers=SERVICE, timeout=30) as client:
            refused = await client.post("/v1/events", json={"events": [{"userId": "alice",
                                                                        "event": note("z" * 70_000)}]})
            assert_problem(refused.status_code, refused.headers, refused.content, {413})
        await probe.ws.close()
        for i in range(12):
            await gw.publish("alice", note(f"{i}" + "z" * 60_000))
        again = await connect(gw)
        resumed = await again.auth(gw.token("alice"), resume={"epoch": welcome["epoch"], "offset": 0})
        assert resumed["recovered"] is True
        events = await again.events(12, timeout=10)
        assert [e["offset"] for e in events] == list(range(1, 13))
