"""Replay every recording of the real ComfyUI 0.3.64 against the simulator and compare signatures.

Run: ``.venv/bin/python -m pytest tests/fidelity -v``.  Each replay writes what the simulator answered to
``test-output/fidelity/<scenario>.jsonl`` (same shape as the recordings) for inspection.
"""
from __future__ import annotations

import copy
import json

import pytest

from .compare import (
    compare_recordings,
    content_family,
    format_mismatches,
    path_template,
    shape,
    signature,
)
from testkit.recordings import load_recording, recording_files

from .conftest import OUTPUT_DIR, TRACES_DIR
from .replay import replay
from .trace import is_uuid, trace_of, vary_graph

TRACES = recording_files(TRACES_DIR)


# ---- the replay against the simulator ---------------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("trace_path", TRACES, ids=lambda p: p.stem)
def test_trace_fidelity(trace_path, simulator, simulator_control):
    trace = trace_of(load_recording(trace_path))
    result = replay(trace, simulator.url, simulator_control)
    result.write_jsonl(OUTPUT_DIR / f"{trace.name}.jsonl")
    mismatches = compare_recordings(trace.events, result.events)
    report = []
    if mismatches:
        report.append(format_mismatches(mismatches, f"{trace.name}: {len(mismatches)} difference(s) from the recording"))
    if result.problems:
        report.append("replay problems:\n" + "\n".join(f"  {p}" for p in result.problems))
    assert not report, "\n".join(report) + f"\n(replay written to {OUTPUT_DIR / (trace.name + '.jsonl')})"


# ---- the loader ------------------------------------------------------------------------------------------
def _trace(name):
    return trace_of(load_recording(name))


@pytest.mark.parametrize("trace_path", TRACES, ids=lambda p: p.stem)
def test_every_trace_loads_with_a_graph_for_each_post(trace_path):
    trace = trace_of(load_recording(trace_path))
    posts = [a for a in trace.actions if a.kind == "post_prompt"]
    for action in posts + trace.preamble:
        assert isinstance(action.graph, dict) and action.graph, action.describe()
        assert all("class_type" in node or "inputs" in node for node in action.graph.values())
    times = [a.t for a in trace.actions]
    assert times == sorted(times)


def test_loader_recovers_posts_from_history_and_queue_bodies():
    trace = _trace("queue_and_delete")
    posts = [a for a in trace.actions if a.kind == "post_prompt"]
    assert len(posts) == 6
    assert [p.front for p in posts] == [False, False, False, False, False, True]
    assert all(p.client == "A" and p.client_id == trace.client_ids["A"] for p in posts)
    assert all(p.source.startswith("graph from") for p in posts)
    # the delete requests carry the recorded ids, mapped at replay time
    deletes = [a for a in trace.actions if a.kind == "http" and a.path == "/queue" and a.method == "POST"]
    assert deletes[0].json_body == {"delete": [posts[1].prompt_id]}
    assert deletes[2].json_body == {"clear": True}


def test_loader_caller_prompt_id_reuse_and_extra_data():
    trace = _trace("client_prompt_id")
    posts = [a for a in trace.actions if a.kind == "post_prompt"]
    assert [p.caller_prompt_id for p in posts] == ["job-2c3b9b74", "job-2c3b9b74", None]
    # each post of the reused id gets the graph the history held right after it (seeds differ)
    assert posts[0].graph["1"]["inputs"]["seed"] != posts[1].graph["1"]["inputs"]["seed"]
    assert posts[2].extra_data == {"job": "abc"}
    assert is_uuid(posts[2].prompt_id)


def test_loader_two_clients_and_a_post_without_client_id():
    trace = _trace("two_clients")
    posts = [a for a in trace.actions if a.kind == "post_prompt"]
    assert [p.client for p in posts] == ["A", "B", None]
    assert posts[2].client_id is None
    assert [a.client for a in trace.actions if a.kind == "ws_open"] == ["A", "B", "C_observer"]


def test_loader_invalid_workflows_and_raw_bodies():
    trace = _trace("invalid_workflows")
    posts = [a for a in trace.actions if a.kind == "post_prompt"]
    assert [p.source.split()[0] for p in posts] == [
        "workflows/invalid_unknown_class.json", "workflows/invalid_missing_input.json",
        "workflows/invalid_bad_value.json", "workflows/invalid_no_outputs.json",
        "workflows/invalid_dangling_link.json",
    ]
    raw = [a for a in trace.actions if a.kind == "http" and a.raw_body is not None]
    assert [a.raw_body for a in raw] == ["this is not json"]


def test_loader_kill_restart_and_fallback_graph():
    trace = _trace("server_killed_SIGINT")
    kinds = [a.kind for a in trace.actions]
    assert kinds == ["ws_open", "post_prompt", "kill", "probe_http", "probe_ws", "restart", "http", "http"]
    post = trace.actions[1]
    assert post.source.startswith("FALLBACK workflows/slow_progress.json")
    assert post.graph["1"]["inputs"]["steps"] == 30
    kill = trace.actions[2]
    assert kill.signal == "SIGINT" and kill.done_t == pytest.approx(4.4178)
    assert trace.actions[5].done_t == pytest.approx(12.5117)


def test_loader_reconnect_and_anchors():
    trace = _trace("reconnect_mid_run")
    opens = [a for a in trace.actions if a.kind == "ws_open"]
    assert [o.client for o in opens] == ["A", "A_again"]
    assert opens[0].client_id == opens[1].client_id
    history = next(a for a in trace.actions if a.kind == "http")
    assert history.anchor is not None
    assert (history.anchor.client, history.anchor.key, history.anchor.occurrence) == ("A_again", "executing:null", 0)


def test_loader_preamble_for_state_the_recorded_server_already_had():
    trace = _trace("history_misc")
    assert len(trace.preamble) == 2
    assert [a.kind for a in trace.actions] == ["http"] * 9


def test_fallback_reposts_are_not_served_from_cache():
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"color": 5}}, "2": {"class_type": "SaveImage", "inputs": {}}}
    assert vary_graph(graph, 0) is graph
    assert vary_graph(graph, 2)["1"]["inputs"]["color"] == 7
    seeded = {"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}
    assert vary_graph(seeded, 1)["3"]["inputs"]["seed"] == 43


# ---- the comparator --------------------------------------------------------------------------------------
def _events(name="normal_run"):
    return copy.deepcopy(_trace(name).events)


def _nth(events, predicate, n=0):
    return [e for e in events if predicate(e)][n]


def test_a_trace_compared_with_itself_has_no_differences():
    assert TRACES, f"no recordings in {TRACES_DIR}"
    for path in TRACES:
        events = load_recording(path).events
        assert compare_recordings(events, copy.deepcopy(events)) == [], path.stem


def test_changed_message_type_is_reported():
    expected = _events()
    got = copy.deepcopy(expected)
    frame = _nth(got, lambda e: e["kind"] == "ws" and e["frame"]["type"] == "execution_cached")
    frame["frame"]["type"] = "execution_cached_v2"
    mismatches = compare_recordings(expected, got)
    assert len(mismatches) == 1
    m = mismatches[0]
    assert (m.section, m.client, m.position) == ("ws", "A", 5)
    assert m.expected.startswith("execution_cached ") and m.got.startswith("execution_cached_v2 ")


def test_removed_key_is_reported():
    expected = _events()
    got = copy.deepcopy(expected)
    frame = _nth(got, lambda e: e["kind"] == "ws" and e["frame"]["type"] == "executing"
                 and e["frame"]["data"].get("node") is None)
    del frame["frame"]["data"]["prompt_id"]
    mismatches = compare_recordings(expected, got)
    assert len(mismatches) == 1
    assert "+prompt_id {node:null,prompt_id}" in mismatches[0].expected
    assert "-prompt_id {node:null}" in mismatches[0].got


def test_removed_nested_key_is_reported():
    expected = _events()
    got = copy.deepcopy(expected)
    frame = _nth(got, lambda e: e["kind"] == "ws" and e["frame"]["type"] == "progress_state", 3)
    for node in frame["frame"]["data"]["nodes"].values():
        del node["real_node_id"]
    assert len(compare_recordings(expected, got)) == 1
    history = _nth(got, lambda e: e["kind"] == "http" and e["path"].startswith("/history/"))
    entry = next(iter(history["body"].values()))
    del entry["status"]["completed"]
    mismatches = compare_recordings(expected, got)
    assert len(mismatches) == 2 and mismatches[1].section == "http"


def test_changed_status_code_is_reported():
    expected = _events()
    got = copy.deepcopy(expected)
    _nth(got, lambda e: e["kind"] == "http" and e["path"].startswith("/view"))["status"] = 404
    mismatches = compare_recordings(expected, got)
    assert len(mismatches) == 1
    assert mismatches[0].section == "http" and "-> 200 image png" in mismatches[0].expected
    assert "-> 404 image png" in mismatches[0].got


def test_missing_and_extra_frames_are_reported():
    expected = _events()
    got = copy.deepcopy(expected)
    got.remove(_nth(got, lambda e: e["kind"] == "ws" and e["frame"]["type"] == "execution_success"))
    extra = copy.deepcopy(_nth(got, lambda e: e["kind"] == "ws" and e["frame"]["type"] == "progress"))
    got.insert(got.index(_nth(got, lambda e: e["kind"] == "ws" and e["frame"]["type"] == "progress")), extra)
    texts = [m.text() for m in compare_recordings(expected, got)]
    assert any("missing execution_success" in t for t in texts)
    assert any("unexpected progress" in t for t in texts)


def test_socket_ending_and_probes_are_compared():
    expected = _events("server_killed_SIGKILL")
    got = copy.deepcopy(expected)
    error = _nth(got, lambda e: e["kind"] == "ws_error")
    error.update({"kind": "ws_close", "code": 1001, "reason": ""})
    del error["error"]
    _nth(got, lambda e: e["kind"] == "note" and e.get("text") == "HTTP after kill")["error"] = None
    texts = [m.text() for m in compare_recordings(expected, got)]
    assert any("socket end A" in t and "close frame 1001" in t for t in texts)
    assert any(t.startswith("probe") for t in texts)


def test_ids_file_names_numbers_and_times_do_not_count():
    expected = _events()
    got = json.loads(json.dumps(expected).replace("9abaf5a2-6660-45b8-9953-ce2a67906bf0",
                                                  "11111111-2222-3333-4444-555555555555")
                     .replace("harness_slow_00001_.png", "harness_slow_00042_.png"))
    for event in got:
        event["t"] += 0.5
        frame = event.get("frame", {})
        if frame.get("type") == "progress":
            frame["data"]["value"] += 1
    assert compare_recordings(expected, got) == []


def test_interleaving_across_sockets_does_not_count():
    expected = _events("two_clients")
    got = sorted(copy.deepcopy(expected), key=lambda e: (e.get("client") != "B", e["t"]))
    assert compare_recordings(expected, got) == []


def test_shape_and_templates():
    assert shape({"b": 1, "a": {"x": None}}, 4) == "{a:{x:null},b}"
    assert shape({"1": {"v": 1}, "2": {"v": 2}}, 4) == "{<id>:{v}}"
    assert shape({"images": [{"filename": "f", "type": "output"}]}, 4) == "{images:[{filename,type}]}"
    assert path_template("/history/9abaf5a2-6660-45b8-9953-ce2a67906bf0") == "/history/{id}"
    assert path_template("/history/job-1", {"job-1"}) == "/history/{id}"
    assert path_template("/view?filename=a.png&subfolder=&type=output") == "/view?filename={filename}&subfolder=&type=output"
    assert content_family("application/json; charset=utf-8") == "json"
    assert content_family("") == "none"
    sig = signature(_events("invalid_workflows"))
    assert [h.status for h in sig.http].count(500) == 2
