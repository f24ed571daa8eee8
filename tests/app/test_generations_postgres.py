"""Generations on a shared PostgreSQL (``LIVEGATE_DATABASE_URL``): two gateways, one
database — what one accepted the other serves, outputs byte for byte — and a database
outage answered with ``503 database_unavailable`` until the server is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from livegate.testing.gateway import running_gateway
from livegate.testing.postgres_server import PostgresServer

from .test_generations_http import TOOLS_TOML, body, problem, settled, start


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """This module kills its server: not the session's shared one."""
    with PostgresServer() as server:
        yield server


def tools_file(tmp_path: Path) -> str:
    workflow = Path(__file__).resolve().parents[1] / "fixtures/comfyui/workflows/success.json"
    path = tmp_path / "tools.toml"
    path.write_text(TOOLS_TOML.format(workflow=workflow))
    return str(path)


async def test_two_gateways_on_one_database_serve_each_others_generations_and_outputs(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    url = own_postgres.create_database("shared_two")
    tools = tools_file(tmp_path)
    async with running_gateway(tmp_path / "a", tools_file=tools, database_url=url) as a, \
            running_gateway(tmp_path / "b", tools_file=tools, database_url=url) as b:
        async with a.http("alice") as on_a, b.http("alice") as on_b:
            done = await settled(on_a, (await start(on_a, width=96, height=64))["id"])
            assert done["status"] == "completed", done
            seen = body(await on_b.get(f"/v1/generations/{done['id']}"), "Generation", "asyncapi")
            assert seen["status"] == "completed" and [o["id"] for o in seen["outputs"]] == [
                o["id"] for o in done["outputs"]]
            listed = body(await on_b.get("/v1/generations"), "GenerationPage")
            assert [g["id"] for g in listed["items"]] == [done["id"]]
            for output in done["outputs"]:
                from_a, from_b = await on_a.get(output["url"]), await on_b.get(output["url"])
                assert from_a.status_code == from_b.status_code == 200
                assert from_a.content == from_b.content and len(from_b.content) == output["sizeBytes"]
            first = done["outputs"][0]["url"]
            ranged = await on_b.get(first, headers={"Range": "bytes=1-3"})
            assert ranged.status_code == 206 and ranged.content == (await on_a.get(first)).content[1:4]
        async with b.http("bob") as bob:  # another user's generation is not found on any process
            problem(await bob.get(f"/v1/generations/{done['id']}"), 404, "not_found")


async def test_a_database_outage_answers_503_and_the_gateway_recovers_by_itself(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    url = own_postgres.create_database("outage")
    gateway = running_gateway(tmp_path / "data", tools_file=tools_file(tmp_path), database_url=url)
    async with gateway as gw, gw.http("alice") as client:
        done = await settled(client, (await start(client))["id"])
        image = done["outputs"][0]
        own_postgres.kill()
        try:
            down = problem(await client.get(f"/v1/generations/{done['id']}"), 503, "database_unavailable")
            assert "Retry-After" in (await client.get("/v1/generations")).headers
            assert "password" not in str(down) and "psycopg" not in str(down)  # no driver detail leaks
            problem(await client.post("/v1/generations", json={"toolId": "demo", "inputs": {}}), 503,
                    "database_unavailable")
            problem(await client.get(image["url"]), 503, "database_unavailable")
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
        finally:
            own_postgres.start()
        async with asyncio.timeout(10):  # the pool reconnects on its own: no restart of ours
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
        again = body(await client.get(f"/v1/generations/{done['id']}"), "Generation", "asyncapi")
        assert again["status"] == "completed"
        assert (await client.get(image["url"])).status_code == 200
