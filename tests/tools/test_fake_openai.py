"""The fake OpenAI answers exactly what tests/fixtures/openai says the API answers."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from livegate.testing.fake_openai import FakeOpenAI

from .conftest import OPENAI_FIXTURES

AUTH = {"Authorization": "Bearer sk-test"}
CHAT = OPENAI_FIXTURES / "chat_completions"


def fixture(path: str) -> dict:  # type: ignore[type-arg]
    return json.loads((OPENAI_FIXTURES / path).read_text())


def request_body(name: str) -> dict:  # type: ignore[type-arg]
    return fixture(f"chat_completions/{name}.request.json")["body"]


async def stream(client: httpx.AsyncClient, url: str, body: dict) -> tuple[httpx.Response, list[bytes]]:  # type: ignore[type-arg]
    async with client.stream("POST", url, json=body, headers=AUTH) as response:
        chunks = [chunk async for chunk in response.aiter_raw()]
    return response, chunks


@pytest.mark.parametrize("name", ["stream_basic", "stream_with_usage"])
async def test_chat_stream_replays_the_fixture_bytes_with_its_headers(name: str) -> None:
    async with FakeOpenAI(OPENAI_FIXTURES) as fake, httpx.AsyncClient() as client:
        response, chunks = await stream(client, fake.base_url + "/v1/chat/completions", request_body(name))
    assert response.status_code == 200
    assert b"".join(chunks) == (CHAT / f"{name}.response.sse").read_bytes()
    assert len(chunks) > 5  # cut at odd boundaries, not one blob
    expected = fixture("chat_completions/response_headers.json")["headers"]
    for key, value in expected.items():
        assert response.headers[key] == value
    assert fake.requests[0].headers["authorization"] == "Bearer sk-test"
    assert fake.requests[0].body == request_body(name)


async def test_chat_midstream_error_and_non_stream(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient() as client:
        fake_openai.chat_fixture = "stream_error_midstream"
        _, chunks = await stream(client, url, request_body("stream_basic"))
        assert b"".join(chunks) == (CHAT / "stream_error_midstream.response.sse").read_bytes()
        fake_openai.chat_fixture = None
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
        response = await client.post(url, json=body, headers=AUTH)
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hello! How can I help?"
    assert completion["usage"]["total_tokens"] == 17


async def test_images_b64_url_and_stream(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url + "/v1/images/generations"
    async with httpx.AsyncClient() as client:
        b64 = await client.post(url, json=fixture("images/generations_b64_json.request.json")["body"], headers=AUTH)
        assert b64.json() == fixture("images/generations_b64_json.response.json")["body"]
        assert b64.headers["x-request-id"]

        legacy = await client.post(url, json=fixture("images/generations_url_legacy.request.json")["body"], headers=AUTH)
        item = legacy.json()["data"][0]
        assert item["revised_prompt"] and item["url"].startswith(fake_openai.base_url + "/files/")
        png = await client.get(item["url"])  # a signed link: no Authorization
        assert png.headers["content-type"] == "image/png"
        assert png.content == base64.b64decode(b64.json()["data"][0]["b64_json"])

        _, chunks = await stream(client, url, fixture("images/generations_stream.request.json")["body"])
        assert b"".join(chunks) == (OPENAI_FIXTURES / "images/generations_stream.response.sse").read_bytes()


@pytest.mark.parametrize(
    "name", ["401_invalid_api_key", "404_model_not_found", "429_insufficient_quota", "429_rate_limit_exceeded", "500_server_error"]
)
async def test_error_fixtures_are_answered_exactly(fake_openai: FakeOpenAI, name: str) -> None:
    expected = fixture(f"errors/{name}.json")
    fake_openai.fail_next(name)
    url = fake_openai.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient() as client:
        response = await client.post(url, json=request_body("stream_basic"), headers=AUTH)
        assert response.status_code == expected["status"]
        assert response.json() == expected["body"]
        for key, value in expected["headers"].items():
            assert response.headers[key] == value, key
        # the failure was used up: the next call succeeds
        assert (await client.post(url, json=request_body("stream_basic"), headers=AUTH)).status_code == 200


async def test_auth_model_and_header_override(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient() as client:
        wrong = await client.post(url, json=request_body("stream_basic"), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        missing = await client.post(url, json=request_body("stream_basic"))
        assert missing.status_code == 401
        unknown = await client.post(url, json={**request_body("stream_basic"), "model": "gpt-nonexistent"}, headers=AUTH)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        fake_openai.fail_next("429_rate_limit_exceeded", times=2, headers={"retry-after-ms": "20"})
        for _ in range(2):
            limited = await client.post(url, json=request_body("stream_basic"), headers=AUTH)
            assert limited.status_code == 429 and limited.headers["retry-after-ms"] == "20"
    assert len(fake_openai.requests) == 5


async def test_hang_cut_and_stall_knobs(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2)) as client:
        fake_openai.hang = True
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, json=request_body("stream_basic"), headers=AUTH)
        fake_openai.hang = False

        fake_openai.cut_after_events = 3
        with pytest.raises(httpx.RemoteProtocolError):
            await stream(client, url, request_body("stream_basic"))
        fake_openai.cut_after_events = None

        fake_openai.hang_after_events = 2
        received = b""
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", url, json=request_body("stream_basic"), headers=AUTH) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
        assert received.count(b"\n\n") == 2
    await fake_openai.wait_for_requests(3)
    await fake_openai.wait_for(lambda: fake_openai.stream_disconnects == 1)  # abandoned stream noticed
