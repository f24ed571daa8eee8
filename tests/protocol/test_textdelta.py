"""Streamed text as exact deltas (pure): UTF-16 offsets, merging, conflation, reassembly."""

from __future__ import annotations

import json
import random

from livegate.protocol.outbox import Outbox, Outgoing
from livegate.protocol.textdelta import (
    LegacyText,
    TextAssembler,
    apply,
    merge,
    merge_frames,
    utf16_len,
    utf16_prefix,
)

ASTRAL = "a🌅b😀é\u4e2d"  # two astral chars (2 UTF-16 units each), one BMP accent, one CJK


def chunks(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 5)
        out.append(text[i:i + n])
        i += n
    return out


def progress(offset: int, text_offset: int, delta: str, gen: str = "g1") -> Outgoing:
    data = json.dumps({"epoch": "e", "offset": offset, "type": "generationProgress", "generationId": gen,
                       "fraction": 0.5, "textDelta": delta, "textOffset": text_offset}, ensure_ascii=False)
    return Outgoing(data, offset=offset, conflation_key=gen)


def test_offsets_are_utf16_code_units_as_in_javascript() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len(ASTRAL) == 8  # JS: "a🌅b😀é中".length === 8
    assert utf16_prefix(ASTRAL, 3) == "a🌅" and utf16_prefix(ASTRAL, 6) == "a🌅b😀"
    assert apply("a🌅", 3, "b") == "a🌅b"
    assert apply("a🌅", 1, "x") == "ax"  # text[:offset] + delta
    assert apply("a🌅", 4, "x") is None  # beyond the text: the prefix is missing


def test_merge_is_applying_both_in_order() -> None:
    base = "Hello 🌅"
    for o1, d1, o2, d2 in [(8, " wor", 12, "ld"), (8, "😀", 10, "!"), (8, "abc", 9, "Z"), (8, "abc", 3, "p")]:
        merged = merge(o1, d1, o2, d2)
        assert merged is not None
        step = apply(base, o1, d1)
        assert step is not None
        assert apply(base, *merged) == apply(step, o2, d2)
    assert merge(0, "ab", 5, "x") is None  # not consecutive


def test_merge_frames_keeps_the_newer_fields_and_the_older_start() -> None:
    older, newer = progress(4, 0, "Hi 🌅").data, progress(6, 5, " there").data
    merged = json.loads(merge_frames(older, newer) or "")
    assert (merged["offset"], merged["textOffset"], merged["textDelta"]) == (6, 0, "Hi 🌅 there")
    no_text = json.dumps({"type": "generationProgress", "offset": 7, "generationId": "g1", "fraction": 0.9})
    assert json.loads(merge_frames(older, no_text) or "")["textDelta"] == "Hi 🌅"  # the delta is carried on
    assert merge_frames(no_text, newer) == newer
    whole = json.dumps({"type": "generationProgress", "offset": 8, "generationId": "g1", "partialText": "x"})
    assert merge_frames(older, whole) is None


def test_a_conflated_slow_reader_rebuilds_the_exact_text() -> None:
    """Two generations interleaved, the reader drains at random moments: conflation merges,
    supersedes account for every dropped offset, the text is exact."""
    texts = {"g1": "The lighthouse 🌅 at dusk, its beam 😀 sweeping the fog. " * 5, "g2": ASTRAL * 7}
    parts = {gen: chunks(text, seed) for seed, (gen, text) in enumerate(texts.items())}
    rng = random.Random(7)
    box, offset, sent = Outbox(10_000_000), 0, {"g1": 0, "g2": 0}
    received: list[dict] = []
    while any(parts.values()):
        gen = rng.choice([g for g in parts if parts[g]])
        delta = parts[gen].pop(0)
        offset += 1
        box.push(progress(offset, sent[gen], delta, gen))
        sent[gen] += utf16_len(delta)
        if rng.random() < 0.15:
            while (item := box.pop()) is not None:
                received.append(json.loads(item.frame()))
    while (item := box.pop()) is not None:
        received.append(json.loads(item.frame()))
    assert box.conflated > 0 and len(received) < offset
    seen = {f["offset"] for f in received} | {o for f in received for o in f.get("supersedes", [])}
    assert seen == set(range(1, offset + 1))
    assembler = TextAssembler()
    for frame in received:
        assembler.apply(frame["generationId"], frame["offset"], frame["textOffset"], frame["textDelta"])
    assert {gen: assembler.text(gen) for gen in texts} == texts


def test_a_late_joiner_holds_deltas_until_a_prefix_reaches_them() -> None:
    text = "Hello 🌅 world, again and again."
    assembler = TextAssembler()
    assert assembler.apply("g", 10, 8, " world,") is None and assembler.waiting("g")
    assert assembler.apply("g", 11, 15, " again") is None
    assert assembler.seed("g", "Hello") is None  # too short: 8 units are needed, fetch again
    assert assembler.seed("g", "Hello 🌅 wo") == "Hello 🌅 world, again"  # a longer prefix is fine
    assert assembler.apply("g", 12, 21, " and again.") == text
    assert assembler.apply("g", 11, 15, " again") == text  # an older (replayed) event changes nothing
    assert assembler.stale("g", 12) and not assembler.stale("g", 13)


def test_legacy_connections_get_the_whole_text_as_partial_text() -> None:
    legacy = LegacyText()
    frames = [progress(1, 0, "Hi 🌅").data, progress(2, 5, " there").data]
    out = [json.loads(legacy.frame(f)) for f in frames]
    assert [f["partialText"] for f in out] == ["Hi 🌅", "Hi 🌅 there"]
    assert all("textDelta" not in f and "textOffset" not in f for f in out)
    update = json.dumps({"type": "generationUpdate", "offset": 3, "generationId": "g1", "status": "completed"})
    assert legacy.frame(update) == update and legacy.assembler.text("g1") is None  # forgotten at the end


def test_a_legacy_late_joiner_gets_partial_text_once_the_prefix_is_known() -> None:
    run_text = {"g1": None}
    legacy = LegacyText(lambda gen: run_text[gen])
    first = json.loads(legacy.frame(progress(7, 3, "lo").data))
    assert "partialText" not in first and "textDelta" not in first  # joined mid-stream, no prefix yet
    run_text["g1"] = "Hello wor"  # the run (on this process) is already further
    assert json.loads(legacy.frame(progress(8, 5, " wo").data))["partialText"] == "Hello wo"
    assert json.loads(legacy.frame(progress(9, 8, "rld").data))["partialText"] == "Hello world"


def test_a_legacy_late_joiner_asks_once_for_a_prefix_from_elsewhere() -> None:
    """The run is on another process: the I/O layer takes ``wanted``, fetches the saved
    text (which may lag) and seeds; one fetch at a time per generation."""
    legacy = LegacyText(lambda gen: None)
    assert "partialText" not in json.loads(legacy.frame(progress(7, 3, "lo").data))
    assert legacy.wanted == ["g1"]
    legacy.wanted.clear()
    legacy.frame(progress(8, 5, " wo").data)
    assert legacy.wanted == []  # still in flight: not asked twice
    assert legacy.seed("g1", "He") is False  # the saved text lagged behind the held deltas
    legacy.frame(progress(9, 8, "r").data)
    assert legacy.wanted == []  # not before the I/O layer says so (it waits a while)
    legacy.ask_again("g1")
    assert "partialText" not in json.loads(legacy.frame(progress(10, 9, "l").data))
    assert legacy.wanted == ["g1"]  # asked again
    assert legacy.seed("g1", "Hel") is True
    legacy.ask_again("g1")
    assert json.loads(legacy.frame(progress(11, 10, "d").data))["partialText"] == "Hello world"
