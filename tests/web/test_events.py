"""GET /api/jobs/<id>/events from a plain HTTP client: a job's statuses as Server-Sent Events, woken by Redis pub/sub,
ending after the terminal status; Last-Event-ID resumes; under gunicorn, streams beyond EVENT_STREAMS are refused
and never starve status polls."""
from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import uuid
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest
import requests

from app import events
from app.dispatch import QUEUE_EVENTS
from app.status import TERMINAL
from testkit.services import GunicornWeb, LiveServer
from testkit.waiting import eventually
from web.events import event_id

CLOSED = None  # what EventStream.next() gives once the server has closed the stream


class EventStream:
    """One event stream read by a thread of its own: each event ({"id", "event", "data"}) arrives in order, then
    CLOSED when the server ends the stream."""

    def __init__(self, base_url: str, job_id: str, last_id: str | None = None):
        url = urlparse(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
        self.connection.request("GET", f"/api/jobs/{job_id}/events", headers=headers)
        self.sock = self.connection.sock
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.fields: list[str] = []  # every field and comment line received
        self.received: queue.Queue[dict[str, Any] | None] = queue.Queue()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.response.read()

    def next(self, timeout: float = 30.0) -> dict[str, Any] | None:
        return self.received.get(timeout=timeout)

    def until_closed(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every event up to the server's end of the stream."""
        events = []
        while (event := self.next(timeout)) is not CLOSED:
            events.append(event)
        return events

    def close(self) -> None:
        """Closes the connection (the server sees its client leave); the reading thread then ends."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.status != 200:
            self._close()

    def _close(self) -> None:
        self.response.close()
        self.connection.close()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line:
                    self.fields.append(line)
                if not line:
                    if "data" in event:
                        self.received.put({**event, "data": json.loads(event["data"])})
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self._close()
        self.received.put(CLOSED)


@pytest.fixture
def streams() -> Iterator[list[EventStream]]:
    """open(stream) is remembered here and closed after the test."""
    opened: list[EventStream] = []
    yield opened
    for stream in opened:
        stream.close()


def open_stream(streams: list[EventStream], base_url: str, job_id: str, last_id: str | None = None) -> EventStream:
    streams.append(EventStream(base_url, job_id, last_id))
    return streams[-1]


def submit(base_url: str, steps: int = 20, **fields: Any) -> str:
    response = requests.post(f"{base_url}/api/jobs", json={"prompt": "events", "steps": steps, "width": 64,
                                                            "height": 64, **fields}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def get_status(base_url: str, job_id: str, timeout: float = 10) -> requests.Response:
    return requests.get(f"{base_url}/api/jobs/{job_id}", timeout=timeout)


def without_read_time(status: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in status.items() if name != "updated_at"}


def set_progress(core, job_id: str, value: int) -> None:
    """A PROGRESS write as a worker makes it (through the guarded backend, which publishes it)."""
    core.backend.store_result(job_id, {"phase": "running", "progress": {"value": value, "max": 20}}, "PROGRESS")


def test_a_job_streams_its_progress_then_its_end_and_the_stream_closes(start_simulator, start_worker, live_web,
                                                                       streams):
    start_worker(start_simulator(step_seconds=0.05))
    job_id = submit(live_web.url, steps=20)
    stream = open_stream(streams, live_web.url, job_id)
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-store" and stream.headers["X-Accel-Buffering"] == "no"
    events = stream.until_closed()
    assert stream.fields[0].startswith("retry: ")

    states = [event["data"]["state"] for event in events]
    assert states[-1] == "SUCCESS" and "PROGRESS" in states, states
    assert not set(states[:-1]) & set(TERMINAL), states
    values = [event["data"]["progress"]["overall_percent"] for event in events if event["data"]["state"] == "PROGRESS"
              and event["data"].get("progress")]
    assert len(set(values)) >= 3 and values == sorted(values), values
    for event in events:
        assert event["event"] == "status" and event["data"]["id"] == job_id
        assert event["id"] == event_id(event["data"])
        assert {"state", "request", "created_at", "updated_at"} <= set(event["data"])
    assert all(a["id"] != b["id"] for a, b in zip(events, events[1:])), "a status was sent twice in a row"
    progress = next(event["data"] for event in events if event["data"]["state"] == "PROGRESS")
    assert {"phase", "message", "progress", "worker"} <= set(progress), progress
    # The terminal event is the status as the status route answers it.
    assert without_read_time(events[-1]["data"]) == without_read_time(get_status(live_web.url, job_id).json())


def test_last_event_id_resumes_after_the_end(start_simulator, start_worker, live_web, jobs, streams):
    start_worker(start_simulator())
    job_id = submit(live_web.url, steps=3)
    jobs.wait_terminal(job_id)
    [final] = open_stream(streams, live_web.url, job_id).until_closed()
    assert final["data"]["state"] == "SUCCESS"

    # A client that missed the end (its last event was an earlier status) is sent the end, once.
    resumed = open_stream(streams, live_web.url, job_id, last_id="an-earlier-status").until_closed()
    assert [event["id"] for event in resumed] == [final["id"]]
    # A client that has the end gets nothing more: 204, which tells EventSource to stop reconnecting.
    again = open_stream(streams, live_web.url, job_id, last_id=final["id"])
    assert again.status == 204 and again.body == b""


def test_a_stream_closes_after_event_stream_seconds_and_resumes_without_repeating(make_app, core, streams):
    web = LiveServer(make_app(event_stream_seconds=1.0)).start()
    try:
        job_id = submit(web.url)  # no GPU worker: it stays queued
        first = open_stream(streams, web.url, job_id)
        assert [event["data"]["state"] for event in first.until_closed(timeout=10)] == ["QUEUED"]
        queued_id = next(line.split(": ", 1)[1] for line in first.fields if line.startswith("id: "))
        # Reconnected with the id of the status it has: nothing new, nothing sent.
        assert open_stream(streams, web.url, job_id, last_id=queued_id).until_closed(timeout=10) == []
        # Then the job changes while a resumed stream is open: that change is sent.
        resumed = open_stream(streams, web.url, job_id, last_id=queued_id)
        set_progress(core, job_id, 4)
        event = resumed.next(timeout=10)
        assert event is not CLOSED and event["data"]["state"] == "PROGRESS"
        assert event["data"]["progress"]["value"] == 4
    finally:
        web.stop()


def test_the_stream_is_woken_by_published_writes_not_by_polling(live_web, core, streams):
    job_id = submit(live_web.url)
    stream = open_stream(streams, live_web.url, job_id)
    assert stream.next(timeout=10)["data"]["state"] == "QUEUED"

    # A write that publishes nothing (a plain SET of the result key; the backend's writes all publish): a stream that
    # polled Redis would send it; one woken by notifications does not.
    meta = {"status": "PROGRESS", "result": {"phase": "running", "progress": {"value": 7, "max": 20}},
            "task_id": job_id, "traceback": None, "children": [], "date_done": None}
    core.redis.set(core.backend.get_key_for_task(job_id), core.backend.encode(meta))
    assert get_status(live_web.url, job_id).json()["progress"]["value"] == 7
    with pytest.raises(queue.Empty):
        stream.next(timeout=2.0)

    # A write as the workers make it (the guarded backend publishes it): sent promptly.
    set_progress(core, job_id, 8)
    event = stream.next(timeout=10)
    assert event is not CLOSED and event["data"]["progress"]["value"] == 8


def test_a_process_follows_every_stream_on_one_subscription(live_web, core, streams, monkeypatch):
    monkeypatch.setattr(events, "IDLE_SECONDS", 0.0)  # the hubs of earlier tests' apps, now idle, go
    first, second = submit(live_web.url), submit(live_web.url)
    for job_id in (first, first, second):
        assert open_stream(streams, live_web.url, job_id).next(timeout=10)["data"]["state"] == "QUEUED"
    channels = (core.backend.get_key_for_task(first), QUEUE_EVENTS.encode())
    eventually(lambda: dict(core.redis.pubsub_numsub(*channels)) == dict.fromkeys(channels, 1), timeout=15,
               failure=lambda: f"subscribers: {core.redis.pubsub_numsub(*channels)}")
    for stream in streams:
        stream.close()
    eventually(lambda: core.redis.pubsub_numsub(core.backend.get_key_for_task(first))[0][1] == 0, timeout=10,
               failure=lambda: "the job's channel stayed subscribed after its streams closed")


def test_a_queued_job_is_told_when_the_queue_moves(start_simulator, start_worker, live_web, streams):
    ahead, behind = submit(live_web.url, steps=40), submit(live_web.url, steps=40)
    stream = open_stream(streams, live_web.url, behind)
    first = stream.next(timeout=10)["data"]
    assert first["state"] == "QUEUED" and first["queue"]["position"] == 2
    start_worker(start_simulator(step_seconds=0.2))  # takes `ahead`: `behind` is next in line

    def next_in_line() -> bool:
        status = stream.next(timeout=30)["data"]
        assert status["state"] == "QUEUED", f"it started before it was told it was next: {status}"
        return status["queue"]["position"] == 1

    eventually(next_in_line, timeout=30)
    assert get_status(live_web.url, ahead).json()["state"] in ("STARTED", "PROGRESS")


def test_a_queued_job_is_told_when_a_job_ahead_of_it_is_cancelled(live_web, streams):
    ahead, behind = submit(live_web.url), submit(live_web.url)
    stream = open_stream(streams, live_web.url, behind)
    assert stream.next(timeout=10)["data"]["queue"]["position"] == 2
    assert requests.delete(f"{live_web.url}/api/jobs/{ahead}", timeout=10).json()["state"] == "CANCELLED"
    moved = stream.next(timeout=10)
    assert moved is not CLOSED and moved["data"]["queue"]["position"] == 1, moved


def test_a_lost_subscription_ends_the_stream_and_a_reconnection_follows_again(live_web, core, streams):
    job_id = submit(live_web.url)
    stream = open_stream(streams, live_web.url, job_id)
    queued = stream.next(timeout=10)
    core.redis.client_kill_filter(_type="pubsub")  # every pub/sub connection: the web process's hub's among them
    assert stream.next(timeout=15) is CLOSED, "a stream outlived the subscription that wakes it"
    resumed = open_stream(streams, live_web.url, job_id, last_id=queued["id"])
    assert resumed.status == 200
    set_progress(core, job_id, 3)
    event = resumed.next(timeout=10)
    assert event is not CLOSED and event["data"]["progress"]["value"] == 3


def test_without_a_subscription_a_stream_is_refused_and_its_slot_kept_free(make_app, monkeypatch):
    def unreachable(*args: Any) -> None:
        raise ConnectionRefusedError("no Redis here")

    monkeypatch.setattr(events, "Channels", unreachable)
    client = make_app(event_streams=1).test_client()
    job_id = client.post("/api/jobs", json={"prompt": "events"}).json["id"]
    for _ in range(2):  # the second is refused for the same reason: the first gave its slot back
        response = client.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert response.json["error"]["code"] == "unavailable"


def test_an_unknown_job_has_no_events(client):
    for job_id in (str(uuid.uuid4()), "not-a-job-id"):
        response = client.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 404
        assert response.json["error"]["code"] == "not_found"


def test_under_gunicorn_streams_beyond_the_cap_are_refused_and_polls_still_answer(settings, jobs, tmp_path, streams):
    web = GunicornWeb(settings, tmp_path, WEB_WORKERS="1", WEB_THREADS="1", EVENT_STREAMS="4").start()
    try:
        job_id = submit(web.url)  # no GPU worker: it stays queued, its streams stay open
        for _ in range(4):
            stream = open_stream(streams, web.url, job_id)
            assert stream.status == 200 and stream.next(timeout=10)["data"]["state"] == "QUEUED"

        refused = open_stream(streams, web.url, job_id)
        assert refused.status == 503 and int(refused.headers["Retry-After"]) > 0
        assert json.loads(refused.body)["error"]["code"] == "busy"
        # The one process's other thread still answers everything else while four streams hold theirs.
        for _ in range(10):
            poll = get_status(web.url, job_id, timeout=5)
            assert poll.status_code == 200 and poll.json()["state"] == "QUEUED"
        assert requests.get(f"{web.url}/api/jobs?limit=5", timeout=5).status_code == 200

        for stream in streams:
            stream.close()

        def accepted() -> bool:
            stream = open_stream(streams, web.url, job_id)
            return stream.status == 200

        eventually(accepted, timeout=15, interval=0.2, failure=lambda: "closed streams kept their slots")
    finally:
        for stream in streams:
            stream.close()
        web.stop()
