"""The ComfyUI client against recordings of a real ComfyUI 0.3.64, replayed frame by frame.

Each test plays one recorded scenario (``tests/data/comfyui-traces``) through ``ReplayServer`` and asserts
exactly what ``ComfyUIClient`` yields: event types and order, node ids, progress values, file names, and that
every event names the prompt it follows.  Expected values are written out here (and cross-checked against the
recording), so a client that drops, misattributes or invents an event fails.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from testkit.images import image_size
from testkit.recordings import load_workflow
from testkit.waiting import eventually
from tests.replay.server import ReplayServer
from workers.comfyui import (Cached, ComfyUIClient, Event, Failed, ImageRef, Interrupted, NodeExecuted,
                             NodeStarted, Preview, Progress, PromptState, Reconnected, RetryPolicy, Started,
                             Succeeded)
from workers.comfyui.history import terminal_from_history

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
MESSAGE = "SlowProgress: deliberate failure at step 2 of 5\n"


def make_client(server: ReplayServer, **kwargs: Any) -> ComfyUIClient:
    kwargs.setdefault("client_id", str(uuid.uuid4()))
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("watchdog_seconds", 2.0)
    kwargs.setdefault("history_wait", 5.0)
    return ComfyUIClient(server.url, **kwargs)


def shape(events: list[Event]) -> list[tuple]:
    """Events as plain tuples, to compare whole sequences."""
    out: list[tuple] = []
    for e in events:
        if isinstance(e, Started):
            out.append(("Started",))
        elif isinstance(e, Cached):
            out.append(("Cached", e.nodes))
        elif isinstance(e, NodeStarted):
            out.append(("NodeStarted", e.node_id))
        elif isinstance(e, Progress):
            out.append(("Progress", e.node_id, e.value, e.max))
        elif isinstance(e, NodeExecuted):
            out.append(("NodeExecuted", e.node_id, tuple(i.filename for i in e.images)))
        elif isinstance(e, Preview):
            out.append(("Preview", e.node_id, e.mime))
        elif isinstance(e, Reconnected):
            out.append(("Reconnected",))
        elif isinstance(e, Succeeded):
            out.append(("Succeeded", e.source, tuple(i.filename for i in e.images)))
        elif isinstance(e, Failed):
            out.append(("Failed", e.node_id, e.node_type, e.exception_type, e.exception_message))
        elif isinstance(e, Interrupted):
            out.append(("Interrupted", e.node_id))
        else:
            out.append((type(e).__name__,))
    return out


def progress(node: str, maximum: int, values) -> list[tuple]:
    return [("Progress", node, v, maximum) for v in values]


def refs(node: str, *filenames: str) -> tuple[ImageRef, ...]:
    return tuple(ImageRef(name, "", "output", node) for name in filenames)


def assert_recorded_images(server: ReplayServer, run: int, images: tuple[ImageRef, ...]) -> None:
    """The images are exactly those the recording's ``executed`` frames named for that run."""
    recorded = tuple(ImageRef(name, sub, kind, node) for node, name, sub, kind in server.scenario.executed_images(run))
    assert images == recorded


def assert_png(data: bytes, expected: bytes) -> None:
    assert data == expected
    assert image_size(data) == (8, 8)


def run_prompt(client: ComfyUIClient, stream, graph: dict, prompt_id: str | None = None, **kwargs) -> tuple[str, list]:
    prompt_id = prompt_id or str(uuid.uuid4())
    submission = client.submit(graph, prompt_id=prompt_id, **kwargs)
    assert submission.prompt_id == prompt_id
    events = list(stream.follow(prompt_id))
    assert events and all(e.prompt_id == prompt_id for e in events)
    return prompt_id, events


def recorded_state(client: ComfyUIClient, prompt_id: str) -> PromptState:
    """prompt_state once the history of the prompt's run is written, waited for as the client's stream does.

    ComfyUI sends a run's last message from inside the run (main.py prompt_worker: e.execute()) and writes its
    history after it (q.task_done()): a client that asks at once may still find the prompt running."""
    def written() -> PromptState | None:
        state = client.prompt_state(prompt_id)
        assert state.status in ("running", "done"), state
        return state if state.status == "done" else None
    return eventually(written, timeout=client.history_wait)


def monotonic(events: list[Event]) -> bool:
    steps = [(e.node_id, e.value) for e in events if isinstance(e, Progress)]
    return all(a[0] != b[0] or a[1] < b[1] for a, b in zip(steps, steps[1:]))


# --------------------------------------------------------------------------------------------- scenarios

def test_normal_run(replay):
    server = replay("normal_run")
    client = make_client(server)
    with client.stream() as stream:
        pid = str(uuid.uuid4())
        submission = client.submit(server.scenario.graph(0), prompt_id=pid)
        assert (submission.prompt_id, submission.number, submission.node_errors) == (pid, 2, {})
        events = list(stream.follow(pid))
    assert [e.prompt_id for e in events] == [pid] * len(events)
    assert shape(events) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 5, range(1, 6)),
        ("NodeStarted", "2"), ("NodeStarted", "3"), ("NodeExecuted", "3", ("harness_slow_00001_.png",)),
        ("Succeeded", "websocket", ("harness_slow_00001_.png",)),
    ]
    assert monotonic(events)
    final = events[-1]
    assert final.images == refs("3", "harness_slow_00001_.png")
    assert_recorded_images(server, 0, final.images)
    # the websocket alone was enough: no /history call on the way
    assert server.history_answers(pid) == []
    assert_png(client.download(final.images[0]), server.image("harness_slow_00001_.png"))
    # what the client sent: the feature flags, then the prompt with our client id and prompt id
    assert server.received_frames == [(client.client_id, {"type": "feature_flags",
                                                          "data": {"supports_preview_metadata": True}})]
    entry = recorded_state(client, pid).history
    assert entry == server.history_body(0)[pid] == client.history(pid)
    assert entry["prompt"][1] == pid and entry["prompt"][3] == {"client_id": client.client_id}
    assert client.queue().running == () and client.queue().pending == ()


def test_sd15_random_ksampler_cold_then_warm(replay):
    # Long recorded gaps (checkpoint load: 4.5 s) are cut to 0.8 s, still longer than the watchdog: the client
    # reconciles mid-run, gets the recorded `{}` from /history and "running" from /queue, and goes on.
    server = replay("sd15_random_ksampler", max_gap=0.8)
    client = make_client(server, watchdog_seconds=0.5)
    with client.stream() as stream:
        cold, events = run_prompt(client, stream, server.scenario.graph(0))
        assert shape(events) == [
            ("Started",), ("Cached", ()),
            ("NodeStarted", "4"), ("NodeStarted", "5"), ("NodeStarted", "7"), ("NodeStarted", "6"),
            ("NodeStarted", "3"), *progress("3", 2, [1, 2]), ("NodeStarted", "8"), ("NodeStarted", "9"),
            ("NodeExecuted", "9", ("harness_sd15_00001_.png",)),
            ("Succeeded", "websocket", ("harness_sd15_00001_.png",)),
        ]
        assert monotonic(events)
        assert events[-1].images == refs("9", "harness_sd15_00001_.png")
        assert_recorded_images(server, 0, events[-1].images)

        warm, events = run_prompt(client, stream, server.scenario.graph(1))
        assert shape(events) == [
            ("Started",), ("Cached", ("4", "5", "6", "7")), ("NodeStarted", "3"), *progress("3", 2, [1, 2]),
            ("NodeStarted", "8"), ("NodeStarted", "9"), ("NodeExecuted", "9", ("harness_sd15_00002_.png",)),
            ("Succeeded", "websocket", ("harness_sd15_00002_.png",)),
        ]
        assert events[-1].images == refs("9", "harness_sd15_00002_.png")
        assert_recorded_images(server, 1, events[-1].images)
    # the watchdog did look at the server during the cold run's long silences, and was told "still running"
    # by /queue (asked first, so /history is not needed while the prompt runs)
    assert all(a.body == {} for a in server.history_answers(cold))
    queues = [s.body for s in server.served if s.path == "/queue"]
    assert any([item[1] for item in q["queue_running"]] == [cold] for q in queues)
    for image in (refs("9", "harness_sd15_00001_.png") + refs("9", "harness_sd15_00002_.png")):
        assert_png(client.download(image), server.image(image.filename))


def test_cached_twice(replay):
    server = replay("cached_twice")
    client = make_client(server)
    with client.stream() as stream:
        _, first = run_prompt(client, stream, server.scenario.graph(0))
        _, second = run_prompt(client, stream, server.scenario.graph(1))
        _, third = run_prompt(client, stream, server.scenario.graph(2))
    assert shape(first) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 5, range(1, 6)),
        ("NodeStarted", "2"), ("NodeStarted", "3"), ("NodeExecuted", "3", ("harness_cached_00001_.png",)),
        ("Succeeded", "websocket", ("harness_cached_00001_.png",)),
    ]
    # fully cached: no executing, no progress; the executed message is replayed with the same file name
    assert shape(second) == [
        ("Started",), ("Cached", ("1", "2", "3")), ("NodeExecuted", "3", ("harness_cached_00001_.png",)),
        ("Succeeded", "websocket", ("harness_cached_00001_.png",)),
    ]
    assert second[-1].images == first[-1].images == refs("3", "harness_cached_00001_.png")
    assert_recorded_images(server, 1, second[-1].images)
    # only SaveImage's input changed: the sampler is cached, SaveImage runs
    assert shape(third) == [
        ("Started",), ("Cached", ("1", "2")), ("NodeStarted", "3"),
        ("NodeExecuted", "3", ("harness_cached_b_00001_.png",)),
        ("Succeeded", "websocket", ("harness_cached_b_00001_.png",)),
    ]
    assert_recorded_images(server, 2, third[-1].images)


@pytest.mark.parametrize("history_delay", [0.0, 0.5], ids=["recorded", "history-late"])
def test_execution_error(replay, history_delay):
    # "history-late": /history answers {} (and /queue "running") for 0.5 s after execution_error
    server = replay("execution_error", history_delay=history_delay)
    client = make_client(server)
    with client.stream() as stream:
        for run in (0, 1):  # the same failing graph twice: a failed node is not cached
            pid, events = run_prompt(client, stream, server.scenario.graph(run))
            assert shape(events) == [
                ("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 5, [1, 2]),
                ("Failed", "1", "SlowProgress", "RuntimeError", MESSAGE),
            ]
            assert events[-1] == Failed(pid, "1", "SlowProgress", "RuntimeError", MESSAGE)
            # the history tells the same story (the path a reconnecting client takes)
            history = recorded_state(client, pid).history
            assert history["status"]["status_str"] == "error"
            assert terminal_from_history(pid, history) == events[-1]
            if history_delay:  # the client asked before the history was written, and was told "running"
                ended, written = server.milestones[f"terminal:{pid}"], server.milestones[f"history_written:{pid}"]
                early = [s.body for s in server.served if s.path == "/queue" and ended < s.at < written]
                assert early and all([i[1] for i in q["queue_running"]] == [pid] for q in early)


def test_interrupt(replay):
    server = replay("interrupt")
    client = make_client(server)
    with client.stream() as stream:
        # run 1: interrupted after the third step
        first = str(uuid.uuid4())
        client.submit(server.scenario.graph(0), prompt_id=first)
        events = []
        for event in stream.follow(first):
            events.append(event)
            if isinstance(event, Progress) and event.value == 3:
                client.interrupt(first)
        # run 2: an interrupt for a prompt that is not running is ignored; the one for ours stops it
        second = str(uuid.uuid4())
        client.submit(server.scenario.graph(1), prompt_id=second)
        other = str(uuid.uuid4())
        events2 = []
        for event in stream.follow(second):
            events2.append(event)
            if isinstance(event, Progress) and event.value == 2:
                client.interrupt(other)
            if isinstance(event, Progress) and event.value == 4:
                client.interrupt(second)
    assert all(e.prompt_id == first for e in events) and all(e.prompt_id == second for e in events2)
    assert shape(events) == [("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 30, [1, 2, 3]),
                             ("Interrupted", "1")]
    assert events[-1] == Interrupted(first, "1")
    assert shape(events2) == [("Started",), ("Cached", ()), ("NodeStarted", "1"),
                              *progress("1", 30, [1, 2, 3, 4]), ("Interrupted", "1")]
    assert events2[-1] == Interrupted(second, "1")
    assert server.posts("/interrupt") == [
        {"prompt_id": first}, {"prompt_id": other}, {"prompt_id": second}]
    assert terminal_from_history(second, recorded_state(client, second).history) == Interrupted(second, "1")


def test_two_clients_and_a_prompt_without_client_id(replay):
    server = replay("two_clients")
    a, b, c = (make_client(server, watchdog_seconds=1.0) for _ in range(3))
    with a.stream() as stream_a, b.stream() as stream_b, c.stream() as stream_c:
        pa = str(uuid.uuid4())
        pb = str(uuid.uuid4())
        a.submit(server.scenario.graph(0), prompt_id=pa)
        b.submit(server.scenario.graph(1), prompt_id=pb)
        events_a = list(stream_a.follow(pa))
        events_b = list(stream_b.follow(pb))
        # a prompt posted without a client id (and without a prompt id): ComfyUI leaks its progress everywhere
        answer = requests.post(f"{server.url}/prompt", json={"prompt": server.scenario.graph(2)}, timeout=5)
        assert answer.status_code == 200
        p3 = answer.json()["prompt_id"]
        # A follows the client-less prompt: only its leaked progress reaches A, the end comes from /history
        events_leak = list(stream_a.follow(p3))
        # the observer follows A's prompt: it saw none of its messages, but all the leaked ones; /history ends it
        events_c = list(stream_c.follow(pa))
    server.wait_finished()

    assert [e.prompt_id for e in events_a] == [pa] * len(events_a)
    assert shape(events_a) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 4, range(1, 5)),
        ("NodeStarted", "2"), ("NodeStarted", "3"), ("NodeExecuted", "3", ("harness_A_00002_.png",)),
        ("Succeeded", "websocket", ("harness_A_00002_.png",)),
    ]
    assert_recorded_images(server, 0, events_a[-1].images)
    assert [e.prompt_id for e in events_b] == [pb] * len(events_b)
    assert shape(events_b) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 3, range(1, 4)),
        ("NodeStarted", "2"), ("NodeStarted", "3"), ("NodeExecuted", "3", ("harness_B_00002_.png",)),
        ("Succeeded", "websocket", ("harness_B_00002_.png",)),
    ]
    assert_recorded_images(server, 1, events_b[-1].images)
    assert [e.prompt_id for e in events_leak] == [p3] * len(events_leak)
    assert shape(events_leak) == [*progress("1", 2, [1, 2]),
                                  ("Succeeded", "history", ("harness_noclient_00002_.png",))]
    assert events_leak[-1].images == refs("3", "harness_noclient_00002_.png")
    assert shape(events_c) == [("Succeeded", "history", ("harness_A_00002_.png",))]
    assert events_c[-1] == Succeeded(pa, refs("3", "harness_A_00002_.png"), "history")

    # the filtering was really exercised: every socket got the leaked progress, and B's/A's status broadcasts
    def progress_frames(client: ComfyUIClient, prompt_id: str) -> int:
        return sum(1 for _, cid, f in server.sent if cid == client.client_id and isinstance(f, dict)
                   and f.get("type") == "progress" and f["data"].get("prompt_id") == prompt_id)
    assert [progress_frames(x, p3) for x in (a, b, c)] == [2, 2, 2]
    assert [progress_frames(x, pa) for x in (a, b, c)] == [4, 0, 0]
    assert [progress_frames(x, pb) for x in (a, b, c)] == [0, 3, 0]
    assert server.lost == []


@pytest.mark.parametrize("history_delay", [0.0, 1.2], ids=["recorded", "history-late"])
def test_reconnect_mid_run(replay, history_delay):
    # The socket is dropped (no close frame) where the recorder dropped it, after step 3 of 10. The client
    # reconnects with the same client id, gets the greeting a real ComfyUI sends then (status, and an
    # `executing` without prompt_id), and follows to the end; having missed messages, it takes the images from
    # /history.  "history-late": /history still answers {} (and /queue "running") for 1.2 s after
    # execution_success, so a client that asks /history at once finds no entry yet and must ask again.
    server = replay("reconnect_mid_run", history_delay=history_delay)
    client = make_client(server)
    with client.stream() as stream:
        pid, events = run_prompt(client, stream, server.scenario.graph(0))
        done_at = time.monotonic()
    assert shape(events) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 10, [1, 2, 3]), ("Reconnected",),
        *progress("1", 10, range(4, 11)), ("NodeStarted", "2"), ("NodeStarted", "3"),
        ("NodeExecuted", "3", ("harness_slow_00005_.png",)),
        ("Succeeded", "history", ("harness_slow_00005_.png",)),
    ]
    assert monotonic(events)
    assert events[-1].images == refs("3", "harness_slow_00005_.png")
    assert events[-1].images == tuple(ImageRef(i["filename"], i["subfolder"], i["type"], node)
                                      for node, out in server.history_body(0)[pid]["outputs"].items()
                                      for i in out["images"])
    assert server.connections == {client.client_id: 2}
    assert server.lost == []
    # after the reconnect the client asked where the prompt stood: history {} and /queue "running"
    dropped = server.milestones[f"drop:{client.client_id}"]
    assert any(s.path == "/queue" and s.at > dropped and [i[1] for i in s.body["queue_running"]] == [pid]
               for s in server.served)
    ended, written = server.milestones[f"terminal:{pid}"], server.milestones[f"history_written:{pid}"]
    assert done_at >= written
    answers = server.history_answers(pid)
    assert answers[-1].body == server.history_body(0)
    if history_delay:
        # the client kept asking while history was not written: /queue (asked first) said "running"
        polls = [s for s in server.served if s.path == "/queue" and ended < s.at < written]
        assert len(polls) >= 2
        assert all([i[1] for i in s.body["queue_running"]] == [pid] for s in polls)
        assert all(a.body == {} for a in answers if a.at < written)
    assert_png(client.download(events[-1].images[0]), server.image("harness_slow_00005_.png"))


def test_success_does_not_wait_for_history(replay):
    # The history entry is written after execution_success (0.3 s later in the cold SD1.5 run; 1 s here).
    # The client ends on execution_success with the files the executed messages named, without asking
    # /history; asking it then would get {} (the entry is not written yet), and the prompt is still "running" in
    # /queue.
    server = replay("normal_run", history_delay=1.0)
    client = make_client(server)
    with client.stream() as stream:
        pid, events = run_prompt(client, stream, server.scenario.graph(0))
        assert events[-1] == Succeeded(pid, refs("3", "harness_slow_00001_.png"), "websocket")
        assert server.history_answers(pid) == []
        assert client.history(pid) is None
        assert client.prompt_state(pid).status == "running"
    server.wait_finished()
    assert client.prompt_state(pid).status == "done"


def test_previews_with_metadata(replay):
    # The client sends feature_flags first, so ComfyUI 0.3.64 sends type 4 binary frames whose JSON metadata
    # names the prompt and node (here SaveImageWebsocket, node 4).
    server = replay("feature_flags")
    client = make_client(server)
    graph = load_workflow("core_image_ws_progress.json")
    with client.stream() as stream:
        pid, events = run_prompt(client, stream, graph)
    assert shape(events) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), ("NodeStarted", "2"), ("NodeStarted", "4"),
        ("Preview", "4", "image/png"), ("Progress", "4", 0, 2), ("Preview", "4", "image/png"), ("Progress", "4", 1, 2),
        ("NodeStarted", "3"), ("NodeExecuted", "3", ("harness_core_ws_00003_.png", "harness_core_ws_00004_.png")),
        ("Succeeded", "websocket", ("harness_core_ws_00003_.png", "harness_core_ws_00004_.png")),
    ]
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(server.previews) == 2
    for preview, sent in zip(previews, server.previews):
        assert_png(preview.data, sent)
    assert events[-1].images == refs("3", "harness_core_ws_00003_.png", "harness_core_ws_00004_.png")


def test_previews_without_metadata(replay):
    # Recorded from a client that sent no feature_flags: type 1 frames (4-byte type, 4-byte format, PNG),
    # which name no prompt; the client gives them to the prompt that is running.
    server = replay("normal_core_image_ws_progress")
    client = make_client(server)
    with client.stream() as stream:
        pid, events = run_prompt(client, stream, server.scenario.graph(0))
    assert shape(events) == [
        ("Started",), ("Cached", ()), ("NodeStarted", "1"), ("NodeStarted", "2"), ("NodeStarted", "4"),
        ("Progress", "4", 0, 2), ("Preview", None, "image/png"), ("Progress", "4", 1, 2),
        ("Preview", None, "image/png"),
        ("NodeStarted", "3"), ("NodeExecuted", "3", ("harness_core_ws_00001_.png", "harness_core_ws_00002_.png")),
        ("Succeeded", "websocket", ("harness_core_ws_00001_.png", "harness_core_ws_00002_.png")),
    ]
    for preview, sent in zip([e for e in events if isinstance(e, Preview)], server.previews):
        assert_png(preview.data, sent)
    assert_recorded_images(server, 0, events[-1].images)


def test_caller_chosen_prompt_id_reused(replay):
    # One stream per run, as the job runner does (one job, one stream, one prompt id).
    server = replay("client_prompt_id")
    client = make_client(server)
    job = f"job-{uuid.uuid4().hex[:8]}"
    with client.stream() as stream:
        _, first = run_prompt(client, stream, server.scenario.graph(0), prompt_id=job)
    assert first[-1] == Succeeded(job, refs("3", "harness_slow_00010_.png"), "websocket")
    assert recorded_state(client, job).history["prompt"][0] == 11
    # the same prompt id again: accepted, runs again, overwrites the history
    with client.stream() as stream:
        _, second = run_prompt(client, stream, server.scenario.graph(1), prompt_id=job)
    assert shape(second) == [("Started",), ("Cached", ()), ("NodeStarted", "1"), *progress("1", 2, [1, 2]),
                             ("NodeStarted", "2"), ("NodeStarted", "3"),
                             ("NodeExecuted", "3", ("harness_slow_00011_.png",)),
                             ("Succeeded", "websocket", ("harness_slow_00011_.png",))]
    assert second[-1].images == refs("3", "harness_slow_00011_.png")
    assert recorded_state(client, job).history["prompt"][0] == 12
    # extra_data is kept verbatim, with the client id merged in
    with client.stream() as stream:
        third_id, third = run_prompt(client, stream, server.scenario.graph(2), extra_data={"job": "abc"})
    assert shape(third) == [("Started",), ("Cached", ()), *[("NodeStarted", n) for n in "1234"],
                            ("NodeExecuted", "4", ("harness_core_00005_.png",)),
                            ("Succeeded", "websocket", ("harness_core_00005_.png",))]
    assert recorded_state(client, third_id).history["prompt"][3] == {"job": "abc", "client_id": client.client_id}


# ----------------------------------------------- a reused prompt id (two client bugs the replay found, fixed)

def test_reused_prompt_id_on_the_same_stream(replay):
    server = replay("client_prompt_id")
    client = make_client(server)
    job = f"job-{uuid.uuid4().hex[:8]}"
    with client.stream() as stream:
        _, first = run_prompt(client, stream, server.scenario.graph(0), prompt_id=job)
        assert first[-1] == Succeeded(job, refs("3", "harness_slow_00010_.png"), "websocket")
        _, second = run_prompt(client, stream, server.scenario.graph(1), prompt_id=job)
    assert second[-1] == Succeeded(job, refs("3", "harness_slow_00011_.png"), "websocket")


def test_reused_prompt_id_and_the_watchdog(replay):
    # recorded gaps of 0.2 s between steps, a watchdog of 0.1 s: it reconciles during the run
    server = replay("client_prompt_id", max_gap=0.3)
    client = make_client(server, watchdog_seconds=0.1)
    job = f"job-{uuid.uuid4().hex[:8]}"
    with client.stream() as stream:
        _, first = run_prompt(client, stream, server.scenario.graph(0), prompt_id=job)
    assert first[-1] == Succeeded(job, refs("3", "harness_slow_00010_.png"), "websocket")
    with client.stream() as stream:
        _, second = run_prompt(client, stream, server.scenario.graph(1), prompt_id=job)
    assert second[-1] == Succeeded(job, refs("3", "harness_slow_00011_.png"), "websocket")
