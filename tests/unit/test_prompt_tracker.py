"""The prompt tracker alone, no socket: what a real ComfyUI 0.3.64 sent (tests/data/comfyui-traces) goes in, the
events of one prompt come out, and it says when only the history can tell how the prompt ended."""
from __future__ import annotations

import json
import struct
from typing import Any

from testkit.recordings import Recording, load_recording, posted_prompt_id
from workers.comfyui.events import (Cached, Event, Failed, ImageRef, Interrupted, NodeExecuted, NodeStarted, Preview,
                                    Progress, Started, Succeeded, Terminal)
from workers.comfyui.tracker import PromptTracker

STAND_IN_IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(1024)


def recording(scenario: str) -> Recording:
    return load_recording(scenario)


def posted(scenario: str) -> list[str]:
    """The prompt ids ComfyUI accepted, in the order they were posted."""
    return [prompt_id for event in recording(scenario).events if (prompt_id := posted_prompt_id(event))]


def received(scenario: str, client: str = "A") -> list[Any]:
    """What one socket received, in order: JSON messages as dicts, and binary frames rebuilt from their recorded
    header (the recording keeps only the header and the length)."""
    frames: list[Any] = []
    running: tuple[str | None, str | None] = (None, None)
    for entry in recording(scenario).events:
        if entry.get("client") != client:
            continue
        if entry["kind"] == "ws":
            if entry["frame"]["type"] == "executing":
                running = entry["frame"]["data"].get("prompt_id"), entry["frame"]["data"]["node"]
            frames.append(entry["frame"])
        elif entry["kind"] == "ws_binary":
            frames.append(rebuilt_binary(entry, *running))
    return frames


def rebuilt_binary(entry: dict[str, Any], prompt_id: str | None, node: str | None) -> bytes:
    event, word = struct.unpack(">II", bytes.fromhex(entry["head_hex"]))
    header = struct.pack(">II", event, word)
    if event == 4:  # the metadata ComfyUI sends names the prompt and node running on that socket
        metadata = json.dumps({"node_id": node, "prompt_id": prompt_id, "display_node_id": node, "parent_node_id": None,
                               "real_node_id": node, "image_type": "image/png"}).encode()
        assert len(metadata) == word, "rebuilt metadata must have the recorded length"
        header += metadata
    return header + STAND_IN_IMAGE[:entry["length"] - len(header)]


def follow(tracker: PromptTracker, frames: list[Any]) -> list[Event]:
    """Feed frames as EventStream.follow does: until a terminal event, or until only the history can tell."""
    events: list[Event] = []
    for frame in frames:
        events += tracker.feed(frame)
        if (events and isinstance(events[-1], Terminal)) or tracker.needs_history:
            break
    return events


def image(filename: str, node_id: str) -> ImageRef:
    return ImageRef(filename, "", "output", node_id)


def test_a_run_is_reported_start_to_success():
    pid = posted("normal_run")[0]
    saved = image("harness_slow_00001_.png", "3")
    assert follow(PromptTracker(pid), received("normal_run")) == [
        Started(pid), Cached(pid, ()), NodeStarted(pid, "1"),
        *(Progress(pid, "1", step, 5) for step in range(1, 6)),
        NodeStarted(pid, "2"), NodeStarted(pid, "3"), NodeExecuted(pid, "3", (saved,)),
        Succeeded(pid, (saved,), "websocket"),
    ]


def test_a_warm_sd15_run_reports_its_cached_nodes_and_runs_only_the_rest():
    warm = posted("sd15_random_ksampler")[1]
    tracker = PromptTracker(warm)
    events = follow(tracker, received("sd15_random_ksampler"))
    saved = image("harness_sd15_00002_.png", "9")
    assert events == [
        Started(warm), Cached(warm, ("4", "5", "6", "7")), NodeStarted(warm, "3"),
        Progress(warm, "3", 1, 2), Progress(warm, "3", 2, 2), NodeStarted(warm, "8"), NodeStarted(warm, "9"),
        NodeExecuted(warm, "9", (saved,)), Succeeded(warm, (saved,), "websocket"),
    ]
    assert tracker.images == {"9": (saved,)}


def test_a_fully_cached_rerun_replays_its_output_without_running_a_node():
    rerun = posted("cached_twice")[1]
    saved = image("harness_cached_00001_.png", "3")
    assert follow(PromptTracker(rerun), received("cached_twice")) == [
        Started(rerun), Cached(rerun, ("1", "2", "3")), NodeExecuted(rerun, "3", (saved,)),
        Succeeded(rerun, (saved,), "websocket"),
    ]


def test_every_image_of_an_output_node_is_in_the_success():
    [pid] = posted("feature_flags")
    success = follow(PromptTracker(pid), received("feature_flags"))[-1]
    assert success == Succeeded(pid, (image("harness_core_ws_00003_.png", "3"), image("harness_core_ws_00004_.png", "3")),
                                "websocket")


def test_an_execution_error_ends_the_prompt_as_failed_with_node_and_exception():
    for pid in posted("execution_error"):
        events = follow(PromptTracker(pid), received("execution_error"))
        assert events[-3:] == [Progress(pid, "1", 1, 5), Progress(pid, "1", 2, 5),
                               Failed(pid, "1", "SlowProgress", "RuntimeError",
                                      "SlowProgress: deliberate failure at step 2 of 5\n")]


def test_an_interrupt_ends_the_prompt_as_interrupted_at_its_node():
    for pid in posted("interrupt"):
        tracker = PromptTracker(pid)
        assert follow(tracker, received("interrupt"))[-1] == Interrupted(pid, "1")
        assert not tracker.running


def test_messages_of_other_prompts_are_ignored():
    mine = posted("two_clients")[0]
    events = follow(PromptTracker(mine), received("two_clients", "A"))
    assert {event.prompt_id for event in events} == {mine}
    assert Progress(mine, "1", 4, 4) in events and events[-1] == Succeeded(mine, (image("harness_A_00002_.png", "3"),),
                                                                          "websocket")
    tracker = PromptTracker(mine)
    assert follow(tracker, received("two_clients", "B")) == []
    assert not tracker.needs_history


def test_a_client_less_prompt_leaks_only_progress_so_its_end_is_never_seen():
    client_less = posted("two_clients")[2]
    tracker = PromptTracker(client_less)
    assert follow(tracker, received("two_clients", "C_observer")) == [Progress(client_less, "1", 1, 2),
                                                                       Progress(client_less, "1", 2, 2)]
    assert not tracker.needs_history


def test_after_a_reconnect_the_success_is_left_to_the_history():
    [pid] = posted("reconnect_mid_run")
    tracker = PromptTracker(pid, missed=True)
    events = follow(tracker, received("reconnect_mid_run", "A_again"))
    assert tracker.needs_history
    assert not any(isinstance(event, Terminal) for event in events)
    assert [event.value for event in events if isinstance(event, Progress)] == list(range(4, 11))
    assert events[-1] == NodeExecuted(pid, "3", (image("harness_slow_00005_.png", "3"),))


def test_an_end_seen_only_as_executing_null_is_left_to_the_history():
    pid = posted("normal_run")[0]
    frames = [frame for frame in received("normal_run") if frame["type"] != "execution_success"]
    tracker = PromptTracker(pid)
    events = follow(tracker, frames)
    assert tracker.needs_history
    assert not any(isinstance(event, Terminal) for event in events)


def test_a_resumed_prompt_whose_only_message_is_its_end_is_left_to_the_history():
    pid = posted("normal_run")[0]
    tracker = PromptTracker(pid, missed=True)
    assert tracker.feed({"type": "executing", "data": {"node": None, "prompt_id": pid}}) == []
    assert tracker.needs_history


def test_the_tail_of_an_earlier_run_of_the_same_prompt_id_is_skipped():
    job, again = posted("client_prompt_id")[:2]
    assert job == again
    frames = received("client_prompt_id")
    end_of_first = next(i for i, frame in enumerate(frames) if frame["type"] == "execution_success")
    assert follow(PromptTracker(job), frames[:end_of_first + 1])[-1].images == (image("harness_slow_00010_.png", "3"),)
    second = follow(PromptTracker(job), frames[end_of_first + 1:])
    assert second[0] == Started(job)
    assert second[-1] == Succeeded(job, (image("harness_slow_00011_.png", "3"),), "websocket")


def test_previews_with_metadata_go_to_the_prompt_and_node_they_name():
    [pid] = posted("feature_flags")
    frames = received("feature_flags")
    previews = [event for event in follow(PromptTracker(pid), frames) if isinstance(event, Preview)]
    assert [(p.prompt_id, p.node_id, p.mime) for p in previews] == [(pid, "4", "image/png")] * 2
    assert all(p.data.startswith(STAND_IN_IMAGE[:8]) for p in previews)
    binary = [frame for frame in frames if isinstance(frame, bytes)]
    assert all(PromptTracker("another prompt").feed(frame) == [] for frame in binary)


def test_previews_without_metadata_belong_to_the_prompt_only_while_it_runs():
    [pid] = posted("normal_core_image_ws_progress")
    frames = received("normal_core_image_ws_progress")
    previews = [event for event in follow(PromptTracker(pid), frames) if isinstance(event, Preview)]
    assert [(p.prompt_id, p.node_id, p.mime) for p in previews] == [(pid, None, "image/png")] * 2
    binary = next(frame for frame in frames if isinstance(frame, bytes))
    tracker = PromptTracker(pid)
    assert tracker.feed(binary) == []  # not started yet: the preview may be another prompt's
    tracker.feed({"type": "execution_start", "data": {"prompt_id": pid}})
    jpeg = struct.pack(">II", 1, 1) + b"\xff\xd8\xff"
    assert tracker.feed(jpeg) == [Preview(pid, "image/jpeg", b"\xff\xd8\xff", None)]
    tracker.feed({"type": "execution_success", "data": {"prompt_id": pid}})
    assert tracker.feed(binary) == []


def test_frames_that_are_not_what_the_protocol_promises_give_nothing():
    pid = "p"
    tracker = PromptTracker(pid)
    for frame in (None, "text", {"type": "progress"}, {"type": "progress", "data": {"prompt_id": pid, "value": 1}},
                  {"type": "unknown_kind", "data": {"prompt_id": pid}}, b"\x00\x00", struct.pack(">II", 3, 0) + b"x",
                  struct.pack(">II", 4, 5) + b"{bad}png"):
        assert tracker.feed(frame) == []
    assert not tracker.needs_history
