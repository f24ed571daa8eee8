"""Bytes of one streamed answer: ``partialText`` (before) vs ``textDelta`` + ``textOffset``
(after), measured in the same run on the same generation.

A real gateway (in this process, memory bus) runs the ``openai`` chat tool against the fake
OpenAI server (``livegate.testing.fake_openai``) replaying a 4,000-token answer built from
the ``chat_completions/stream_basic`` fixture's chunk format (``FakeOpenAI.long_answer``), paced at ``--tokens-per-second``
(the run context coalesces progress to one event per 50 ms). Two connections of the user
read it at full speed:

* **legacy**: no ``auth.textDeltas``; gets ``partialText`` (the whole text so far) on every
  progress event, exactly as before deltas;
* **deltas**: ``auth.textDeltas: true``; gets ``textDelta`` + ``textOffset``.

Reported per answer: bytes on the wire (WebSocket payloads + frame headers) of each
connection, and bytes of history: *after* is what the bus holds (read back from it);
*before* is the same events as the previous code published them (``partialText``, i.e. the
frames of the legacy connection, which must not have been conflated). Both texts are checked
to equal the final output exactly.

    .venv/bin/python bench/text_stream.py              # 4,000 tokens at 100 tokens/s (~45 s)
    .venv/bin/python bench/text_stream.py --quick      # 400 tokens, a few seconds (the smoke test)
    .venv/bin/python bench/text_stream.py --out bench/results/text_stream.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from livegate.testing.fake_openai import FakeOpenAI  # noqa: E402
from livegate.testing.gateway import running_gateway  # noqa: E402

USER = "bench-text"
def ws_frame_bytes(payload: str) -> int:
    """Bytes on the wire of one unmasked server text frame (RFC 6455 header + payload)."""
    size = len(payload.encode())
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


async def reader(url: str, token: str, text_deltas: bool, ready: asyncio.Event) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    wire = 0
    async with websockets.connect(url, compression=None, max_size=2**26, max_queue=None) as ws:
        auth: dict[str, Any] = {"type": "auth", "token": token}
        if text_deltas:
            auth["textDeltas"] = True
        await ws.send(json.dumps(auth))
        assert json.loads(await ws.recv())["type"] == "welcome"
        ready.set()
        async for raw in ws:
            assert isinstance(raw, str)
            wire += ws_frame_bytes(raw)
            frame = json.loads(raw)
            frames.append(frame)
            if frame.get("type") == "generationUpdate" and frame.get("status") in ("completed", "failed"):
                break
    text = ""
    for f in frames:
        if text_deltas and "textDelta" in f:
            units = text.encode("utf-16-le")[: 2 * f["textOffset"]]
            text = (units + f["textDelta"].encode("utf-16-le")).decode("utf-16-le")
        elif "partialText" in f:
            text = f["partialText"]
    progress = [f for f in frames if f["type"] == "generationProgress"]
    return {"frames": frames, "wire_bytes": wire, "progress_events": len(progress), "text": text,
            "conflated": sum(len(f.get("supersedes", [])) for f in frames)}


async def measure(tokens: int, tokens_per_second: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = ROOT / "tests" / "fixtures" / "openai"
        async with FakeOpenAI(fixtures) as openai:
            expected = openai.long_answer(tokens, seconds=tokens / tokens_per_second)
            tools = Path(tmp) / "tools.toml"
            tools.write_text(f"""
[[tools]]
id = "chat"
kind = "openai"
title = "Chat"
timeout_seconds = {max(60, int(3 * tokens / tokens_per_second))}
[tools.settings]
mode = "chat"
base_url = "{openai.base_url}/v1"
api_key = "sk-test"
timeout_seconds = 30
""")
            # History large enough for the whole answer (1,000 events by default): each side's
            # bytes of history are then those of one whole answer.
            async with running_gateway(Path(tmp) / "data", tools_file=str(tools), history_max_events=100_000) as gw:
                ready = [asyncio.Event(), asyncio.Event()]
                readers = [asyncio.create_task(reader(gw.ws_url, gw.token(USER), deltas, event))
                           for deltas, event in zip((False, True), ready, strict=True)]
                for event in ready:
                    await asyncio.wait_for(event.wait(), 10)
                started = time.monotonic()
                async with httpx.AsyncClient(base_url=gw.http_url, headers={
                        "authorization": f"Bearer {gw.token(USER)}"}) as client:
                    created = await client.post("/v1/generations", json={"toolId": "chat", "inputs": {"prompt": "x"}})
                    created.raise_for_status()
                legacy, deltas = await asyncio.wait_for(asyncio.gather(*readers), 30 + 3 * tokens / tokens_per_second)
                seconds = time.monotonic() - started
                history = await gw.gateway.bus.read(USER, 0)
    final = legacy["frames"][-1]
    [output] = [o for o in final.get("outputs", []) if o["kind"] == "text"] or [{"text": None}]
    if final.get("status") != "completed":
        raise SystemExit(f"the run did not complete: {final}")
    after_history = sum(len(e.data.encode()) for e in history.events)
    before_history = sum(len(json.dumps(f, ensure_ascii=False, separators=(",", ":")).encode())
                         for f in legacy["frames"])
    if len(history.events) != len(legacy["frames"]) or legacy["conflated"]:
        raise SystemExit("the legacy reader must get every event unconflated for the comparison")
    results = {
        "tokens": tokens,
        "characters": len(expected),
        "seconds": round(seconds, 2),
        "progress_events": deltas["progress_events"],
        "history_events": len(history.events),
        "wire_bytes": {"partialText": legacy["wire_bytes"], "deltas": deltas["wire_bytes"]},
        "history_bytes": {"partialText": before_history, "deltas": after_history},
        "conflated": {"partialText": legacy["conflated"], "deltas": deltas["conflated"]},
        "exact": {"partialText": legacy["text"] == expected == output.get("text", expected),
                  "deltas": deltas["text"] == expected},
    }
    results["ratios"] = {
        "wire": round(legacy["wire_bytes"] / deltas["wire_bytes"], 1),
        "history": round(before_history / after_history, 1),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    parser.add_argument("--quick", action="store_true", help="400 tokens at 400 tokens/s")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("httpx", "alembic", "livegate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tokens, rate = (400, 400.0) if args.quick else (args.tokens, args.tokens_per_second)
    results = asyncio.run(measure(tokens, rate))
    wire, hist = results["wire_bytes"], results["history_bytes"]
    print(f"{results['tokens']} tokens ({results['characters']} characters) in {results['seconds']} s, "
          f"{results['progress_events']} progress events")
    print("| per answer | partialText (before) | deltas (after) | before/after |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| bytes on the wire, per connection | {wire['partialText']:,} | {wire['deltas']:,} | "
          f"{results['ratios']['wire']}x |")
    print(f"| bytes of history | {hist['partialText']:,} | {hist['deltas']:,} | {results['ratios']['history']}x |")
    print(f"exact text: {results['exact']}; conflated offsets: {results['conflated']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(results["exact"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
