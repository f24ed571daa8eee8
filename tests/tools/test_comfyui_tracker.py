"""The sans-I/O ComfyUI tracker, fed directly with the captured traces (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from livegate.testing.comfyui_traces import Trace, load_traces
from livegate.tools.comfyui_tracker import (
    CheckHistory,
    ComfyRunTracker,
    Failed,
    Interrupted,
    OutputFile,
    Preview,
    ProgressUpdate,
    QueueChanged,
    ShowFile,
    Succeeded,
    summarise_validation_error,
)

from .conftest import COMFY_FIXTURES

TRACES = load_traces(COMFY_FIXTURES)


def http(name: str) -> dict[str, Any]:
    return json.loads((COMFY_FIXTURES / "http" / f"{name}.json").read_text())


def frames(trace: Trace) -> list[str | bytes]:
    """Every received frame, as the WebSocket client would get it."""
    out: list[str | bytes] = []
    for record in trace.of("recv"):
        if record["kind"] == "binary":
            out.append(base64.b64decode(record["frame_b64"]))
        else:
            out.append(json.dumps(record["msg"]))
    return out


def track(name: str, index: int = 0, prompt_id: str | None = None) -> tuple[ComfyRunTracker, list[Any]]:
    trace = TRACES[name]
    pid = prompt_id or trace.submitted_prompt_ids()[index]
    tracker = ComfyRunTracker(pid, trace.workflow or {})
    actions = [action for frame in frames(trace) for action in tracker.feed(frame)]
    return tracker, actions


def progress(actions: list[Any]) -> list[ProgressUpdate]:
    return [a for a in actions if isinstance(a, ProgressUpdate)]


def test_success_trace() -> None:
    tracker, actions = track("success")
    assert tracker.done and isinstance(actions[-1], Succeeded)
    assert actions[-1].files == (OutputFile("9", "gateway_capture_00001_.png", "", "output"),)
    # the PreviewImage (temp) output is offered as a preview, not as a result
    [show] = [a for a in actions if isinstance(a, ShowFile)]
    assert show.file == OutputFile("10", "ComfyUI_temp_tnxhu_00001_.png", "", "temp")
    updates = progress(actions)
    fractions = [u.fraction for u in updates]
    assert fractions == sorted(fractions) and 0.85 <= fractions[-1] < 1
    messages = [u.message for u in updates]
    assert "VAEEncodeTiled 1/7" in messages and "VAEDecodeTiled 23/23" in messages
    assert "Running SaveImage (node 9)" in messages
    assert "width: 256, height: 256\n batch size: 1" in messages  # binary event 3
    steps = [(u.step, u.total_steps) for u in updates if u.step is not None]
    assert steps[0] == (1, 7) and steps[-1] == (23, 23)


def prompt_actions(actions: list[Any]) -> list[Any]:
    """Without :class:`QueueChanged`: ``status`` frames are about ComfyUI's queue, sent to
    every socket whatever prompt it follows."""
    return [a for a in actions if not isinstance(a, QueueChanged)]


def test_frames_of_other_prompts_are_ignored() -> None:
    tracker, actions = track("success", prompt_id="someone-else")
    assert prompt_actions(actions) == [] and not tracker.started and not tracker.done


def test_status_frames_announce_queue_changes_until_the_prompt_starts() -> None:
    """queue_three_prompts: B waits behind A; every ``status`` frame before B's
    ``execution_start`` is a :class:`QueueChanged` (queue_remaining as captured), none after."""
    trace = TRACES["queue_three_prompts"]
    b_id = trace.submitted_prompt_ids()[1]
    tracker = ComfyRunTracker(b_id, trace.workflow or {})
    seen: list[tuple[Any, bool]] = []
    for frame in frames(trace):
        started_before = tracker.started
        seen += [(a, started_before) for a in tracker.feed(frame) if isinstance(a, QueueChanged)]
    remaining = [a.queue_remaining for a, _ in seen]
    # connect (0), A (1, then 1 as it starts), B (2), C (3), C deleted (2)
    assert remaining[:6] == [0, 1, 1, 2, 3, 2] and all(not started for _, started in seen), remaining
    assert tracker.done and tracker.started


def test_cached_trace_counts_cached_nodes_as_done() -> None:
    _tracker, actions = track("cached")
    assert isinstance(actions[-1], Succeeded)
    assert actions[-1].files == (OutputFile("9", "gateway_capture_00001_.png"),)
    assert max(u.fraction for u in progress(actions)) == 0.99
    assert any(u.message == "10 node(s) cached" for u in progress(actions))


def test_execution_error_trace() -> None:
    tracker, actions = track("execution_error")
    failed = actions[-1]
    assert isinstance(failed, Failed) and tracker.done
    assert (failed.node_id, failed.node_type) == ("3", "SaveImage")
    assert "Saving image outside the output folder is not allowed" in failed.message
    assert failed.message.startswith("SaveImage (node 3) failed: Exception:")
    # reported at the end of the prompt, not at the execution_error frame
    assert sum(isinstance(a, Failed) for a in actions) == 1


def test_interrupted_trace() -> None:
    _, actions = track("interrupted")
    assert actions[-1] == Interrupted("3", "ImageBlur")


def test_websocket_image_previews_are_the_result() -> None:
    _, actions = track("websocket_image")
    previews = [a for a in actions if isinstance(a, Preview)]
    assert len(previews) == 2 and all(p.media_type == "image/png" for p in previews)
    assert all(p.data.startswith(b"\x89PNG") for p in previews)
    result = actions[-1]
    assert isinstance(result, Succeeded) and result.files == ()
    assert [i.data for i in result.images] == [p.data for p in previews]


def test_event4_previews_are_filtered_by_their_prompt_id() -> None:
    _, actions = track("websocket_image_feature_flags")
    previews = [a for a in actions if isinstance(a, Preview)]
    assert len(previews) == 2 and previews[0].data.startswith(b"\x89PNG")
    assert len(actions[-1].images) == 2
    # another prompt's event-4 frames never reach us, even while "started"
    trace = TRACES["websocket_image_feature_flags"]
    other = ComfyRunTracker("not-ours", trace.workflow or {})
    other.started = True
    binary = [f for f in frames(trace) if isinstance(f, bytes)]
    assert [a for f in binary for a in other.feed(f)] == []


def test_queue_trace_keeps_prompts_apart() -> None:
    ids = TRACES["queue_three_prompts"].submitted_prompt_ids()
    for index, filename in [(0, "gateway_queue_A_00001_.png"), (1, "gateway_queue_B_00001_.png")]:
        _, actions = track("queue_three_prompts", index)
        assert [a for a in actions if isinstance(a, Succeeded)] == [Succeeded((OutputFile("3", filename),))]
    tracker, actions = track("queue_three_prompts", prompt_id=ids[2])  # C was deleted
    assert prompt_actions(actions) == [] and not tracker.started


def test_reconnect_trace_accepts_the_prompt_less_executing() -> None:
    _tracker, actions = track("reconnect")
    assert any(isinstance(a, ProgressUpdate) and a.message == "Running ImageBlur (node 3)" for a in actions)
    assert actions[-1] == Succeeded((OutputFile("5", "gateway_slow_00002_.png"),))
    fractions = [u.fraction for u in progress(actions)]
    assert fractions == sorted(fractions)


def test_end_without_outcome_asks_for_the_history() -> None:
    tracker = ComfyRunTracker("p", {"1": {"class_type": "SaveImage"}})
    tracker.feed({"type": "execution_start", "data": {"prompt_id": "p"}})
    assert tracker.feed({"type": "executing", "data": {"node": None, "prompt_id": "p"}}) == [CheckHistory()]
    assert not tracker.done
    entry = http("get_history_prompt_id_success")["response"]["body"]
    [result] = tracker.feed_history(next(iter(entry.values())))
    assert isinstance(result, Succeeded) and tracker.done
    assert tracker.feed({"type": "execution_start", "data": {"prompt_id": "p"}}) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("get_history_prompt_id_success", Succeeded((OutputFile("9", "gateway_capture_00001_.png"),))),
        ("get_history_prompt_id_cached", Succeeded((OutputFile("9", "gateway_capture_00001_.png"),))),
        ("get_history_prompt_id_after_reconnect", Succeeded((OutputFile("5", "gateway_slow_00002_.png"),))),
        ("get_history_prompt_id_interrupted", Interrupted("3", "ImageBlur")),
        (
            "get_history_prompt_id_client_prompt_id",
            Succeeded((OutputFile("3", "ComfyUI_temp_hempm_00001_.png", "", "temp"),)),
        ),
    ],
)
def test_history_entries(name: str, expected: Any) -> None:
    body = http(name)["response"]["body"]
    [(prompt_id, entry)] = body.items()
    assert ComfyRunTracker(prompt_id, entry["prompt"][2]).feed_history(entry) == [expected]


def test_history_error_entry_and_empty_history() -> None:
    [(prompt_id, entry)] = http("get_history_prompt_id_error")["response"]["body"].items()
    tracker = ComfyRunTracker(prompt_id, {})
    assert tracker.feed_history({}) == [] and tracker.feed_history(None) == []
    [failed] = tracker.feed_history(entry)
    assert isinstance(failed, Failed) and failed.node_id == "3" and "output folder" in failed.message


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("post_prompt_400_missing_input", ["Prompt outputs failed validation", "node 2 (SaveImage): required_input_missing", "(images)"]),
        ("post_prompt_400_value_out_of_range", ["node 1 (EmptyImage): value_smaller_than_min: Value 0 smaller than min of 1"]),
        ("post_prompt_400_invalid_combo", ["node 1 (VAELoader): value_not_in_list", "nope.safetensors"]),
        ("post_prompt_400_bad_link_type", ["return_type_mismatch", "received_type(LATENT)"]),
        ("post_prompt_400_unknown_class", ["Cannot execute because node NoSuchNode does not exist: Node ID '#1'"]),
        ("post_prompt_400_no_outputs", ["Prompt has no outputs"]),
        ("post_prompt_400_no_prompt_key", ["No prompt provided"]),
    ],
)
def test_validation_error_summaries(name: str, needles: list[str]) -> None:
    summary = summarise_validation_error(http(name)["response"]["body"])
    for needle in needles:
        assert needle in summary


def test_garbage_frames_are_ignored() -> None:
    tracker = ComfyRunTracker("p", {})
    tracker.started = True
    for frame in [b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x04\x00\x00\x00\x05{bad}", "not json", "[]", {"type": "x"}]:
        assert tracker.feed(frame) == []
