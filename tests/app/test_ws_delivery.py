"""Per-user delivery, offsets, resume, conflation, slow consumers and shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import msgspec

from livegate.protocol import http
from livegate.testing.gateway import running_gateway

from .conftest import note


async def test_every_tab_of_a_user_gets_every_event_and_nobody_else(gateway, connect) -> None:
    tabs = [await connect() for _ in range(3)]
    for tab in tabs:
        await tab.auth(gateway.token("alice"))
    bob = await connect()
    await bob.auth(gateway.token("bob"))
    results = await gateway.publish("alice", *[note(f"n{i}") for i in range(5)])
    assert [r["offset"] for r in results] == [1, 2, 3, 4, 5]
    await gateway.publish("bob", note("for bob"))
    for tab in tabs:
        got = await tab.events(5)
        assert [e["offset"] for e in got] == [1, 2, 3, 4, 5]
        assert [e["message"] for e in got] == [f"n{i}" for i in range(5)]
        assert {e["epoch"] for e in got} == {results[0]["epoch"]}
    (only,) = await bob.events(1)
    assert only["message"] == "for bob" and only["offset"] == 1


async def test_resume_replays_exactly_what_was_missed(gateway, connect) -> None:
    probe = await connect()
    welcome = await probe.auth(gateway.token("alice"))
    await gateway.publish("alice", *[note(f"a{i}") for i in range(3)])
    seen = await probe.events(3)
    await probe.ws.close()
    await gateway.publish("alice", *[note(f"b{i}") for i in range(4)])
    again = await connect()
    resumed = await again.auth(gateway.token("alice"), resume={"epoch": welcome["epoch"], "offset": seen[-1]["offset"]})
    assert resumed["recovered"] is True and resumed["offset"] == 7
    replay = await again.events(4)
    assert [e["offset"] for e in replay] == [4, 5, 6, 7]
    await gateway.publish("alice", note("live"))
    assert (await again.events(1))[0]["offset"] == 8


async def test_resume_seam_under_concurrent_publishing(gateway, connect) -> None:
    """Publish continuously while clients keep reconnecting with resume: the union of what
    they saw has no gap and no duplicate."""
    stop = asyncio.Event()
    published: list[int] = []

    async def publisher() -> None:
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as client:
            while not stop.is_set() and len(published) < 400:
                r = await client.post("/v1/events", json={"events": [{"userId": "alice", "event": note("x")}] * 5},
                                      headers={"Authorization": f"Bearer {gateway.gateway.config.service_token}"})
                published.extend(x["offset"] for x in r.json()["results"])

    task = asyncio.create_task(publisher())
    seen: list[int] = []
    position = None
    for _ in range(8):
        probe = await connect()
        welcome = await probe.auth(gateway.token("alice"), resume=position)
        if position is not None:
            assert welcome["recovered"] is True
        else:
            seen.extend(range(1, welcome["offset"] + 1))  # before our first connection
        for event in await probe.events(20, timeout=10):
            seen.append(event["offset"])
        position = {"epoch": welcome["epoch"], "offset": seen[-1]}
        await probe.ws.close()
    stop.set()
    await task
    assert seen == list(range(1, len(seen) + 1)), "gap or duplicate at a resume seam"


async def test_resume_not_recovered_for_other_epoch_or_evicted(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, history_max_events=5) as gw:
        probe = await connect(gw)
        welcome = await probe.auth(gw.token("alice"))
        await gw.publish("alice", *[note(str(i)) for i in range(10)])
        other = await connect(gw)
        reset = await other.auth(gw.token("alice"), resume={"epoch": "not-" + welcome["epoch"], "offset": 3})
        assert reset["recovered"] is False and reset["offset"] == 10 and reset["epoch"] == welcome["epoch"]
        evicted = await connect(gw)
        assert (await evicted.auth(gw.token("alice"), resume={"epoch": welcome["epoch"], "offset": 2}))["recovered"] is False
        kept = await connect(gw)
        assert (await kept.auth(gw.token("alice"), resume={"epoch": welcome["epoch"], "offset": 5}))["recovered"] is True
        assert [e["offset"] for e in await kept.events(5)] == [6, 7, 8, 9, 10]
        # Nothing is replayed after recovered:false: the next frame is live.
        await gw.publish("alice", note("live"))
        assert (await evicted.events(1))[0]["offset"] == 11


async def test_publish_validates_every_item_and_applies_nothing_on_error(gateway) -> None:
    token = gateway.gateway.config.service_token
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        bad = await client.post("/v1/events", headers={"Authorization": f"Bearer {token}"}, json={"events": [
            {"userId": "alice", "event": note("ok")},
            {"userId": "alice", "event": {"type": "generationProgress", "generationId": "g", "fraction": 2}},
            {"userId": "alice", "event": {"type": "bogus"}},
        ]})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        problem = bad.json()
        assert problem["code"] == "invalid_event"
        assert [(e["index"], e["path"]) for e in problem["errors"]] == [
            (1, "$.events[1].event.fraction"), (2, "$.events[2].event.type")]
        ok = await client.post("/v1/events", headers={"Authorization": f"Bearer {token}"},
                               json={"events": [{"userId": "alice", "event": note("first")}]})
        assert ok.json()["results"][0]["offset"] == 1  # the bad batch published nothing
        user_token = await client.post("/v1/events", headers={"Authorization": f"Bearer {gateway.token('alice')}"},
                                       json={"events": [{"userId": "alice", "event": note("x")}]})
        assert user_token.status_code == 401 and user_token.json()["code"] == "unauthorized"


async def test_publish_answers_every_malformed_request_with_a_problem(gateway) -> None:
    # POST /v1/events is a raw ASGI route (routes_core.py): these are the answers Litestar's
    # own layers gave before, checked here because no @post handler gives them any more.
    auth = {"Authorization": f"Bearer {gateway.gateway.config.service_token}"}
    one = {"events": [{"userId": "alice", "event": note("x")}]}
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            wrong = await client.request(method, "/v1/events", headers=auth)
            assert wrong.status_code == 405 and wrong.headers["allow"] == "POST", method
            assert wrong.headers["content-type"] == "application/problem+json"
            assert wrong.json()["code"] == "method_not_allowed"
        anonymous = await client.post("/v1/events", json=one)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        not_json = await client.post("/v1/events", headers=auth, content=b"{nope")
        assert not_json.status_code == 400 and not_json.json()["code"] == "bad_request"
        huge = await client.post("/v1/events", headers=auth, content=b" " * (16 * 1024 * 1024 + 1))
        assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: the body arrives in pieces (more_body)
            body = msgspec.json.encode(one)
            for start in range(0, len(body), 7):
                yield body[start:start + 7]

        chunked = await client.post("/v1/events", headers=auth, content=chunks())
        assert chunked.status_code == 200 and chunked.headers["content-type"] == "application/json"
        assert chunked.json()["results"][0]["userId"] == "alice"


async def test_a_chunked_body_over_the_limit_is_refused_without_a_content_length(gateway) -> None:
    auth = {"Authorization": f"Bearer {gateway.gateway.config.service_token}"}

    async def endless():
        for _ in range(20):  # 20 MiB, more than the 16 MiB limit; the server stops reading at it
            yield b" " * (1024 * 1024)

    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        response = await client.post("/v1/events", headers=auth, content=endless())
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


async def test_slow_reader_gets_conflated_progress_then_4001_and_loses_nothing(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, queue_max_bytes=40_000) as gw:
        slow = await connect(gw)
        welcome = await slow.auth(gw.token("alice"))
        fast = await connect(gw)
        await fast.auth(gw.token("bob"))
        publisher = gw.gateway.publisher
        # One burst, no await between items: the writer cannot drain in between.
        events = [("alice", http.GenerationProgressInput(generation_id=f"g{i % 2}", fraction=i / 400))
                  for i in range(400)]
        events.insert(100, ("alice", http.NotificationInput(level="info", message="never dropped")))
        await publisher.publish(events)
        await publisher.publish([("bob", http.NotificationInput(level="info", message="bob is fine"))])
        got = await slow.events(3)
        assert [e["offset"] for e in got] == [101, 400, 401]
        assert got[0]["type"] == "notification"
        accounted = {o for e in got for o in [e["offset"], *e.get("supersedes", [])]}
        assert accounted == set(range(1, 402)), "conflation must account for every offset"
        assert (await fast.events(1))[0]["message"] == "bob is fine"
        # Now overflow with events that cannot be conflated: 4001, then resume loses nothing.
        await publisher.publish([("alice", http.NotificationInput(level="info", message="x" * 500))
                                 for _ in range(200)])
        await slow.expect_close(4001)
        again = await connect(gw)
        resumed = await again.auth(gw.token("alice"), resume={"epoch": welcome["epoch"], "offset": 401})
        assert resumed["recovered"] is True
        assert [e["offset"] for e in await again.events(200)] == list(range(402, 602))


async def test_graceful_shutdown_closes_with_4000_after_flushing(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path) as gw:
        probes = [await connect(gw) for _ in range(3)]
        for p in probes:
            await p.auth(gw.token("alice"))
        await gw.publish("alice", *[note(str(i)) for i in range(20)])
        await gw.gateway.drain(5.0)
        for p in probes:
            frames = await p.expect_close(4000)
            assert [f["offset"] for f in frames if "offset" in f] == list(range(1, 21))
            assert frames[-1]["code"] == "server_restart"
        late = await connect(gw)
        await late.send({"type": "auth", "token": gw.token("alice")})
        (error,) = await late.expect_close(4000)
        assert error["code"] == "server_restart"


async def test_metrics_count_what_happened(gateway, connect) -> None:
    probe = await connect()
    await probe.auth(gateway.token("alice"))
    await gateway.publish("alice", note("m"))
    await probe.events(1)
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        text = (await client.get("/metrics")).text
        assert 'livegate_events_published_total{type="notification"} 1.0' in text
        assert "livegate_events_delivered_total 1.0" in text
        assert "livegate_publish_to_send_seconds_count 1.0" in text  # that delivery, timed
        assert 'livegate_publish_to_send_seconds_bucket{le="+Inf"} 1.0' in text
        assert "livegate_connections 1.0" in text
        assert (await client.get("/readyz")).json() == {"status": "ok", "checks": {"bus": True, "database": True,
                                                                                   "accepting": True}}
