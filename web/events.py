"""GET /api/jobs/<id>/events: a job's status changes as Server-Sent Events, until it ends.

Each event is `id: <event id>`, `event: status`, `data: <the status, as GET /api/jobs/<id> answers it>`. The id
names the status's content (a hash, without `updated_at`, the time it was read): a client that reconnects with
`Last-Event-ID` (EventSource does by itself) is sent the current status only if it differs from the one it has, and
one whose last event was the job's terminal status is answered 204 (EventSource then stops reconnecting).

A stream is woken by Redis pub/sub (app/events.py), never by a timer: on each notification it reads the job's status
afresh and sends it if it changed. It ends after the terminal status, after EVENT_STREAM_SECONDS (the client
reconnects), or when its client goes away. Each process serves at most EVENT_STREAMS streams at once (gunicorn gives
it that many threads beyond WEB_THREADS, web/gunicorn_conf.py); one more is answered 503 `busy` with Retry-After,
and its client polls GET /api/jobs/<id> instead."""
from __future__ import annotations

import hashlib
import json
import select
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import redis
from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from app.celery_app import Text2ImgCelery
from app.events import EventHub, EventsUnavailable, Follower
from app.status import TERMINAL
from web.api import status_or_404
from web.context import celery_app
from web.errors import error_response

bp = Blueprint("events", __name__)

EXTENSION = "text2img.events"
HEARTBEAT = 15.0  # seconds between comments on a quiet stream: proxies keep it, a dead client is noticed
RETRY_MS = 2000  # the reconnection delay the stream asks EventSource for
RETRY_AFTER = 5  # seconds, on a refused stream
# The client's end of the connection closed (Linux). Elsewhere a dead client is noticed at a heartbeat's write.
CLIENT_GONE = getattr(select, "POLLRDHUP", 0)


@dataclass
class Streams:
    """This app's event streams: the process's pub/sub hub, and the slots that cap how many are open at once."""
    hub: EventHub
    slots: threading.BoundedSemaphore
    limit: int
    seconds: float


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    queue = celery_app(state.app)
    settings = queue.settings
    state.app.extensions[EXTENSION] = Streams(EventHub(settings),
                                              threading.BoundedSemaphore(max(settings.event_streams, 1)),
                                              settings.event_streams, settings.event_stream_seconds)


def event_id(status: dict[str, Any]) -> str:
    """The same status content, the same id."""
    content = {name: value for name, value in status.items() if name != "updated_at"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


@bp.get("/api/jobs/<job_id>/events")
def job_events(job_id: str) -> Any:
    status_or_404(job_id)
    streams: Streams = current_app.extensions[EXTENSION]
    if streams.limit < 1 or not streams.slots.acquire(blocking=False):
        return _refused("busy", f"this server already serves {streams.limit} event streams; poll "
                                f"GET /api/jobs/{job_id} instead")
    queue = celery_app()
    try:
        follower = streams.hub.follow(queue.backend.get_key_for_task(job_id))
    except EventsUnavailable as exc:
        streams.slots.release()
        return _refused("unavailable", f"live events are unavailable ({exc}); poll GET /api/jobs/{job_id} instead")
    held = _Held(streams, follower)
    try:
        status = queue.statuses.job_status(job_id)  # after subscribing: every later write wakes the stream
        last_id = request.headers.get("Last-Event-ID", "")
        # Nothing more will come: the client has the terminal status (or the job expired a moment ago).
        if status is None or (status["state"] in TERMINAL and event_id(status) == last_id):
            held.release()
            return Response(status=204)
        client = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
        response = Response(_events(queue, job_id, follower, status, last_id, client, streams.seconds),
                            content_type="text/event-stream")
    except BaseException:
        held.release()
        raise
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.call_on_close(held.release)
    return response


def _refused(code: str, message: str) -> Any:
    response = error_response(503, code, message)
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


class _Held:
    """What an open stream holds, given back once: whether it ended, its client left, or it never started."""

    def __init__(self, streams: Streams, follower: Follower):
        self.streams = streams
        self.follower: Follower | None = follower
        self.lock = threading.Lock()

    def release(self) -> None:
        with self.lock:
            follower, self.follower = self.follower, None
        if follower is not None:
            self.streams.hub.unfollow(follower)
            self.streams.slots.release()


def _events(queue: Text2ImgCelery, job_id: str, follower: Follower, status: dict[str, Any], last_id: str,
            client: Any, seconds: float) -> Iterator[str]:
    poller = select.poll()
    poller.register(follower, select.POLLIN)
    if client is not None and CLIENT_GONE:
        poller.register(client, CLIENT_GONE)
    deadline = time.monotonic() + seconds
    sent = last_id
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        follower.queued = status["state"] == "QUEUED"
        current = event_id(status)
        if current != sent:
            yield f"id: {current}\nevent: status\ndata: {json.dumps(status)}\n\n"
            sent = current
        if status["state"] in TERMINAL:
            return
        while True:  # until something may have changed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready = {fd for fd, _ in poller.poll(min(HEARTBEAT, remaining) * 1000)}
            if follower.fileno() in ready:
                break
            if ready:  # the client went away
                return
            yield ": keepalive\n\n"
        follower.drain()
        if follower.lost:
            return
        follower.queued = True  # a move of the queue while the status is read wakes it again
        try:
            status = queue.statuses.job_status(job_id)
        except redis.RedisError:
            return
        if status is None:
            return
