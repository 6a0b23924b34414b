"""The ComfyUI client against the simulator, over real sockets."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests
import websocket

from testkit.images import image_bytes, image_size, pixels
from testkit.processes import free_port
from testkit.waiting import eventually
from tests import graphs
from workers.comfyui import (Cached, ComfyUIClient, ComfyUIUnavailable, Failed, Interrupted, NodeExecuted,
                             Preview, Progress, PromptLost, PromptRejected, Reconnected, RetryPolicy, Started,
                             Succeeded, Timeouts)
from workers.comfyui.spare import SpareSockets

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)


def client_for(sim, **kwargs) -> ComfyUIClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("watchdog_seconds", 2.0)
    kwargs.setdefault("history_wait", 10.0)
    return ComfyUIClient(sim.url, **kwargs)


def run(client: ComfyUIClient, graph: dict, prompt_id: str | None = None) -> list:
    with client.stream() as stream:
        submission = client.submit(graph, prompt_id or str(uuid.uuid4()))
        return list(stream.follow(submission.prompt_id))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return image_size(data)


def test_normal_run_progress_is_monotonic_and_images_download(simulator):
    client = client_for(simulator)
    events = run(client, graphs.txt2img(steps=6, width=96, height=80, batch_size=2), "job-normal")
    assert isinstance(events[0], Started)
    steps = [e.value for e in events if isinstance(e, Progress)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(e.prompt_id == "job-normal" for e in events)
    final = events[-1]
    assert isinstance(final, Succeeded) and final.source == "websocket"
    assert [i.filename for i in final.images] == ["test_00001_.png", "test_00002_.png"]
    assert [png_size(client.download(i)) for i in final.images] == [(96, 80), (96, 80)]
    assert client.prompt_state("job-normal").status == "done"


def test_same_request_gives_same_pixels_and_another_seed_does_not(start_simulator):
    first, second = start_simulator(), start_simulator()
    pictures = []
    for sim, seed in ((first, 1), (second, 1), (first, 2)):
        client = client_for(sim)
        final = run(client, graphs.txt2img(seed=seed, prefix=f"seed{seed}"))[-1]
        pictures.append(pixels(client.download(final.images[0])))
    assert pictures[0] == pictures[1]
    assert pictures[0] != pictures[2]


def test_two_clients_at_once_see_only_their_own_prompt(simulator):
    results: dict[str, list] = {}

    def follow(name: str, text: str) -> None:
        client = client_for(simulator)
        results[name] = run(client, graphs.txt2img(text=text, steps=5, prefix=name), f"job-{name}")

    threads = [threading.Thread(target=follow, args=(name, f"picture {name}")) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for name in ("a", "b"):
        events = results[name]
        assert {e.prompt_id for e in events} == {f"job-{name}"}
        assert [e.value for e in events if isinstance(e, Progress)] == [1, 2, 3, 4, 5]
        assert [i.filename for i in events[-1].images] == [f"{name}_00001_.png"]


def test_progress_of_a_prompt_without_client_id_does_not_leak_into_ours(simulator):
    requests.post(simulator.url + "/prompt", json={"prompt": graphs.slow(steps=4, seed=99)}, timeout=5)
    events = run(client_for(simulator), graphs.slow(steps=3, seed=5))
    assert [e.value for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert isinstance(events[-1], Succeeded)


def test_cached_rerun_reports_cached_nodes_and_the_same_file(simulator):
    client = client_for(simulator)
    graph = graphs.txt2img(seed=3)
    first = run(client, graph)
    again = run(client, graph)
    cached = next(e for e in again if isinstance(e, Cached))
    assert set(cached.nodes) == set(graph)
    assert not [e for e in again if isinstance(e, Progress)]
    assert again[-1].images == first[-1].images


def test_validation_error_is_typed_with_node_errors(simulator):
    graph = graphs.txt2img()
    graph["3"]["inputs"]["steps"] = 0
    graph["3"]["inputs"]["sampler_name"] = "no_such_sampler"
    with pytest.raises(PromptRejected) as caught:
        client_for(simulator).submit(graph)
    error = caught.value
    assert error.status == 400 and error.error_type == "prompt_outputs_failed_validation"
    assert [e["type"] for e in error.node_errors["3"]["errors"]] == ["value_smaller_than_min", "value_not_in_list"]
    assert "node 3 (KSampler)" in str(error) and simulator.url in str(error)


def test_execution_error_names_node_and_exception(simulator):
    events = run(client_for(simulator), graphs.slow(steps=5, fail_at_step=2))
    final = events[-1]
    assert isinstance(final, Failed)
    assert (final.node_id, final.node_type, final.exception_type) == ("1", "SlowProgress", "RuntimeError")
    assert "deliberate failure at step 2 of 5" in final.exception_message
    assert [e.value for e in events if isinstance(e, Progress)] == [1, 2]


def test_interrupt_stops_only_the_named_running_prompt(simulator):
    client = client_for(simulator)
    with client.stream() as stream:
        running = client.submit(graphs.slow(steps=200, step_seconds=0.02, seed=11)).prompt_id
        waiting = client.submit(graphs.slow(steps=2, seed=12)).prompt_id
        events = []
        for event in stream.follow(running):
            events.append(event)
            if isinstance(event, Progress) and event.value == 3:
                client.interrupt(waiting)  # not running: ComfyUI ignores it
            if isinstance(event, Progress) and event.value == 6:
                client.interrupt(running)
        assert isinstance(events[-1], Interrupted) and events[-1].node_id == "1"
        assert max(e.value for e in events if isinstance(e, Progress)) < 200
        assert isinstance(list(stream.follow(waiting))[-1], Succeeded)


def test_cancel_removes_a_queued_prompt(simulator):
    client = client_for(simulator)
    with client.stream() as stream:
        first = client.submit(graphs.slow(steps=20, step_seconds=0.02, seed=21)).prompt_id
        queued = client.submit(graphs.slow(steps=2, seed=22)).prompt_id
        assert client.prompt_state(queued).status == "queued" and client.prompt_state(queued).position == 1
        client.cancel(queued)
        assert client.prompt_state(queued).status == "unknown"
        assert isinstance(list(stream.follow(first))[-1], Succeeded)


def test_websocket_dropped_mid_run_still_delivers_the_result(start_simulator):
    sim = start_simulator(drop_ws_after=12)
    client = client_for(sim)
    events = run(client, graphs.txt2img(steps=20), "job-dropped")
    assert any(isinstance(e, Reconnected) for e in events)
    final = events[-1]
    assert isinstance(final, Succeeded) and final.source == "history"
    assert [i.filename for i in final.images] == ["test_00001_.png"]
    assert png_size(client.download(final.images[0])) == (64, 64)


def test_history_written_late_after_a_drop_is_waited_for(start_simulator):
    sim = start_simulator(drop_ws_after=12, history_delay=1.0)
    events = run(client_for(sim), graphs.txt2img(steps=20))
    assert isinstance(events[-1], Succeeded) and events[-1].images


def test_history_written_late_does_not_delay_the_websocket_result(start_simulator):
    sim = start_simulator(history_delay=2.0)
    client = client_for(sim)
    with client.stream() as stream:
        prompt_id = client.submit(graphs.txt2img(steps=2)).prompt_id
        started = time.monotonic()
        final = list(stream.follow(prompt_id))[-1]
        assert isinstance(final, Succeeded) and final.source == "websocket"
        assert client.history(prompt_id) is None  # outputs were named by `executed`; history is not there yet
        assert png_size(client.download(final.images[0])) == (64, 64)
        assert time.monotonic() - started < 2.0


def test_silent_socket_is_caught_by_the_watchdog(simulator):
    client = client_for(simulator, watchdog_seconds=0.5)
    with client.stream() as stream:
        prompt_id = client.submit(graphs.slow(steps=8, step_seconds=0.1)).prompt_id
        # Another socket with our client id takes our messages: ours stays open but hears nothing more.
        thief = websocket.create_connection(simulator.url.replace("http", "ws") + f"/ws?clientId={client.client_id}")
        try:
            events = list(stream.follow(prompt_id))
        finally:
            thief.close()
    final = events[-1]
    assert isinstance(final, Succeeded) and final.source == "history"
    assert [i.filename for i in final.images] == ["slow_00001_.png"]


def test_closing_an_older_socket_with_our_client_id_deafens_ours(simulator):
    """ComfyUI's websocket teardown forgets the client id whatever socket holds it now (server.py's finally)."""
    url = simulator.url.replace("http", "ws") + "/ws?clientId=shared-id"
    older = websocket.create_connection(url)
    newer = websocket.create_connection(url, timeout=1.0)
    assert json.loads(newer.recv())["type"] == "status"
    older.close()
    time.sleep(0.2)  # the server forgets the id once it has handled the close; nothing shows when that is done
    ComfyUIClient(simulator.url).submit(graphs.txt2img(steps=1))  # broadcasts `status` to every registered socket
    with pytest.raises(websocket.WebSocketTimeoutException):
        newer.recv()
    newer.close()


def test_a_deafened_socket_reconnects_and_hears_the_rest_of_the_prompt(simulator):
    client = client_for(simulator, watchdog_seconds=0.5)
    with client.stream() as stream:
        prompt_id = client.submit(graphs.slow(steps=40, step_seconds=0.1)).prompt_id
        events = []
        for event in stream.follow(prompt_id):
            events.append(event)
            if isinstance(event, Progress) and event.value == 3:  # an older socket with our id comes and goes
                websocket.create_connection(simulator.url.replace("http", "ws") + f"/ws?clientId={client.client_id}"
                                            ).close()
    reconnected = next(i for i, e in enumerate(events) if isinstance(e, Reconnected))
    assert any(isinstance(e, Progress) for e in events[reconnected:])  # live progress again, not only the end
    assert isinstance(events[-1], Succeeded) and events[-1].source == "history"


def test_comfyui_down_fails_after_bounded_retries_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    client = ComfyUIClient(url, retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1),
                           timeouts=Timeouts(connect=0.5, read=1.0))
    started = time.monotonic()
    with pytest.raises(ComfyUIUnavailable) as caught:
        client.submit(graphs.slow())
    assert url in str(caught.value) and "3 attempt" in str(caught.value)
    with pytest.raises(ComfyUIUnavailable):
        client.stream().open()
    assert time.monotonic() - started < 10


def test_prompt_lost_when_comfyui_restarts_mid_run(simulator):
    client = client_for(simulator, retry=RetryPolicy(attempts=20, base_delay=0.1, max_delay=0.3))
    with client.stream() as stream:
        prompt_id = client.submit(graphs.slow(steps=50, step_seconds=0.05)).prompt_id
        with pytest.raises(PromptLost) as caught:
            for event in stream.follow(prompt_id):
                if isinstance(event, Progress) and event.value == 2:
                    simulator.kill()
                    simulator.start()
    assert caught.value.prompt_id == prompt_id and simulator.url in str(caught.value)


def test_submit_retries_a_500_without_queuing_twice(start_simulator):
    sim = start_simulator(refuse_prompt=2)
    client = client_for(sim)
    with client.stream() as stream:
        prompt_id = client.submit(graphs.slow(steps=2), "job-retried").prompt_id
        assert isinstance(list(stream.follow(prompt_id))[-1], Succeeded)
    posts = [r for r in sim.requests_seen() if r["method"] == "POST" and r["path"] == "/prompt"]
    assert len(posts) == 3
    assert client.queue().running == () and client.queue().pending == ()


def test_img2img_uploads_the_input_image(simulator):
    client = client_for(simulator)
    name = client.upload_image(image_bytes((64, 64), (200, 30, 30)), "source.png")
    assert name == "source.png"
    final = run(client, graphs.img2img(name))[-1]
    assert isinstance(final, Succeeded)
    assert png_size(client.download(final.images[0])) == (64, 64)


def test_previews_are_jpeg_and_belong_to_our_prompt(start_simulator):
    sim = start_simulator(previews=True)
    events = run(client_for(sim), graphs.txt2img(steps=3), "job-preview")
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 3
    assert all(p.prompt_id == "job-preview" and p.mime == "image/jpeg" and p.data[:2] == b"\xff\xd8" for p in previews)
    assert {p.node_id for p in previews} == {"3"}


def test_node_executed_events_name_the_saved_images(simulator):
    events = run(client_for(simulator), graphs.txt2img(batch_size=3))
    executed = [e for e in events if isinstance(e, NodeExecuted)]
    assert [e.node_id for e in executed] == ["9"]
    assert len(executed[0].images) == 3 and executed[0].images == events[-1].images


def test_clients_made_by_one_thread_keep_one_connection_and_survive_a_restart(simulator):
    """Each job makes its own client; a thread's clients of one ComfyUI share a kept-alive session (no TCP connect
    per job), other threads have their own (a client made in one thread and used in another too), and a
    connection ComfyUI closed (a restart) is opened again."""
    first, second = client_for(simulator), client_for(simulator)
    assert first.http.session is second.http.session
    elsewhere: list = []
    thread = threading.Thread(target=lambda: elsewhere.extend([client_for(simulator).http.session,
                                                               first.http.session]))
    thread.start()
    thread.join()
    assert elsewhere[0] is elsewhere[1] is not first.http.session
    first.queue()
    simulator.stop()
    simulator.start()
    assert client_for(simulator).queue().running == ()


def test_a_spare_socket_hears_the_prompt_posted_under_its_id_and_a_closed_one_is_not_used(simulator):
    spares = SpareSockets()
    assert spares.take(simulator.url) is None
    client = client_for(simulator)
    spares.refill(simulator.url, client.stream_policy())
    spare = eventually(lambda: spares.take(simulator.url), timeout=10)
    assert spares.take(simulator.url) is None  # taken: one job's only
    owner = client_for(simulator, client_id=spare.client_id)
    with owner.stream(spare.ws) as stream:
        prompt_id = owner.submit(graphs.txt2img(steps=2), str(uuid.uuid4())).prompt_id
        events = list(stream.follow(prompt_id))
    assert isinstance(events[-1], Succeeded) and events[-1].source == "websocket"
    assert any(isinstance(event, Progress) for event in events)
    spares.refill(simulator.url, client.stream_policy())
    eventually(lambda: spares._spares.get(simulator.url), timeout=10)
    simulator.stop()  # ComfyUI closes the spare's socket
    simulator.start()
    assert spares.take(simulator.url) is None
