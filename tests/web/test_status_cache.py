"""The web tier's snapshot cache on a real Redis: polls of a started job cost no Redis read until one of its keys
changes; queued jobs, this process's own writes, lost connections and flushes never leave a stale status."""
from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from celery.exceptions import TaskRevokedError
from flask import jsonify

from app.snapshot_cache import SnapshotCache, _Read
from testkit.waiting import eventually
from web.context import celery_app


@pytest.fixture
def app(make_app, request):
    """The web app, with the settings a test names by parametrizing `app` indirectly."""
    return make_app(**getattr(request, "param", {}))


@pytest.fixture
def web_core(app):
    """The Celery app of the web app: its status reader is the one the polls go through."""
    return celery_app(app)


@pytest.fixture
def snapshot_reads(monkeypatch, web_core) -> list[str]:
    """The job ids whose snapshot the web app read from Redis, in order."""
    reads: list[str] = []
    snapshots = web_core.statuses.snapshots
    real = snapshots.read

    def counting(job_id, backend_key):
        reads.append(job_id)
        return real(job_id, backend_key)

    monkeypatch.setattr(snapshots, "read", counting)
    return reads


@pytest.fixture
def live_cache(web_core):
    cache = web_core.statuses.cache()
    assert cache.wait_live(10)
    return cache


def queued_job(client) -> str:
    return client.post("/api/jobs", json={"prompt": "cached", "steps": 20}).json["id"]


def set_progress(core, job_id: str, value: int) -> None:
    core.backend.store_result(job_id, {"phase": "sampling", "progress": {"value": value, "max": 20}}, "PROGRESS")


def progress_value(client, job_id: str) -> int:
    return client.get(f"/api/jobs/{job_id}").json["progress"]["value"]


def test_polling_a_running_job_reads_redis_again_only_after_it_changed(client, core, live_cache, snapshot_reads):
    job_id = queued_job(client)
    set_progress(core, job_id, 3)
    eventually(lambda: progress_value(client, job_id) == 3)
    reads_before = len(snapshot_reads)
    assert [progress_value(client, job_id) for _ in range(20)] == [3] * 20
    assert len(snapshot_reads) == reads_before
    set_progress(core, job_id, 4)  # as a worker would, on its own connection
    eventually(lambda: progress_value(client, job_id) == 4, timeout=2)
    assert len(snapshot_reads) > reads_before


def test_a_poll_sees_every_write_made_before_it(client, core, live_cache, monkeypatch):
    job_id = queued_job(client)
    # The listener thread stops reading the notifications: each poll must apply those already received.
    monkeypatch.setattr(live_cache.subscriber, "wait", lambda timeout: time.sleep(timeout))
    for value in range(1, 101):
        set_progress(core, job_id, value)  # each returns once Redis has it; its invalidation is on its way
        assert progress_value(client, job_id) == value
    assert live_cache.live


@pytest.mark.parametrize("celery_state", ["PENDING", "RETRY"])
def test_a_queued_job_is_read_every_time(client, core, live_cache, snapshot_reads, celery_state):
    job_id = queued_job(client)
    if celery_state == "RETRY":
        core.backend.store_result(job_id, None, "RETRY")
    for _ in range(3):
        assert client.get(f"/api/jobs/{job_id}").json["state"] == "QUEUED"
    assert snapshot_reads.count(job_id) == 3


def test_a_cancel_from_another_process_shows_at_the_next_poll(client, core, live_cache):
    job_id = queued_job(client)
    set_progress(core, job_id, 5)
    eventually(lambda: progress_value(client, job_id) == 5)
    # What `python -m app cancel` writes from another process: this process's cache is not told.
    core.backend.write(job_id, "REVOKED", TaskRevokedError("cancelled"))
    assert client.get(f"/api/jobs/{job_id}").json["state"] == "CANCELLED"


def test_cancel_then_poll_shows_cancelled_at_once(client, core, live_cache, monkeypatch):
    job_id = queued_job(client)
    set_progress(core, job_id, 5)
    eventually(lambda: progress_value(client, job_id) == 5)
    client.get(f"/api/jobs/{job_id}")  # cached now
    monkeypatch.setattr(live_cache, "_apply", lambda message: None)  # Redis's invalidations come too late
    assert client.delete(f"/api/jobs/{job_id}").json["state"] == "CANCELLED"
    assert client.get(f"/api/jobs/{job_id}").json["state"] == "CANCELLED"


@pytest.mark.parametrize("app", [{"status_cache": False}], indirect=True, ids=["STATUS_CACHE=0"])
def test_switched_off_it_reads_every_time(client, core, live_cache, snapshot_reads):
    job_id = queued_job(client)
    set_progress(core, job_id, 3)
    for _ in range(3):
        assert progress_value(client, job_id) == 3
    assert snapshot_reads.count(job_id) == 3


class HeldRead:
    """The web app's next snapshot read from Redis, held once armed until `release` is set (then it fails with
    `failure`, if set). `begun`: the snapshot reads begun; `joined`: the polls that waited for a read in flight."""

    def __init__(self) -> None:
        self.armed = False
        self.release = threading.Event()
        self.failure: Exception | None = None
        self.begun = self.joined = 0
        self.lock = threading.Lock()


@pytest.fixture
def held_read(monkeypatch, web_core) -> HeldRead:
    held = HeldRead()
    snapshots = web_core.statuses.snapshots
    read, shared = snapshots.read, _Read.shared

    def holding(job_id, backend_key):
        with held.lock:
            held.begun += 1
            hold, held.armed = held.armed, False
        if hold:
            held.release.wait(10)
            if held.failure is not None:
                raise held.failure
        return read(job_id, backend_key)

    def joining(self):
        with held.lock:
            held.joined += 1
        return shared(self)

    monkeypatch.setattr(snapshots, "read", holding)
    monkeypatch.setattr(_Read, "shared", joining)
    return held


def script_calls(client: redis.Redis) -> int:
    """The Lua scripts Redis has run so far (a snapshot read is one)."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


def polls_meeting_a_held_read(held: HeldRead, count: int, poll) -> list:
    """`count` polls at once while the first snapshot read they make is held, released once every poll has read,
    joined a read or answered; what each poll returned or raised."""
    held.armed = True
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(poll) for _ in range(count)]
        eventually(lambda: held.begun + held.joined + sum(f.done() for f in futures) >= count, timeout=10,
                   failure=lambda: f"{held.begun} reads begun, {held.joined} polls waiting")
        held.release.set()
        return [future.exception() or future.result() for future in futures]


def test_concurrent_polls_after_a_change_share_one_redis_read(app, client, core, live_cache, clean_redis, held_read):
    job_id = queued_job(client)
    set_progress(core, job_id, 3)
    eventually(lambda: progress_value(client, job_id) == 3)
    set_progress(core, job_id, 4)
    scripts_before = script_calls(clean_redis)
    values = polls_meeting_a_held_read(held_read, 20, lambda: progress_value(app.test_client(), job_id))
    assert values == [4] * 20
    assert script_calls(clean_redis) - scripts_before == 1


def test_polls_waiting_on_a_failed_read_read_for_themselves(client, core, web_core, live_cache, held_read):
    job_id = queued_job(client)
    set_progress(core, job_id, 4)
    eventually(lambda: progress_value(client, job_id) == 4)
    set_progress(core, job_id, 5)
    held_read.failure = redis.ConnectionError("Redis went away mid-read")
    outcomes = polls_meeting_a_held_read(held_read, 10, lambda: web_core.statuses.job_status_json(job_id))
    assert [outcome for outcome in outcomes if isinstance(outcome, Exception)] == [held_read.failure]
    assert [json.loads(outcome)["progress"]["value"] for outcome in outcomes if isinstance(outcome, str)] == [5] * 9


def test_a_poll_after_a_write_sees_it_while_others_poll(client, core, web_core, live_cache):
    job_id = queued_job(client)
    set_progress(core, job_id, 0)
    stop = threading.Event()

    def poller() -> list[int]:
        seen = []
        while not stop.is_set():
            seen.append(json.loads(web_core.statuses.job_status_json(job_id))["progress"]["value"])
        return seen

    with ThreadPoolExecutor(3) as pool:
        pollers = [pool.submit(poller) for _ in range(3)]
        try:
            for value in range(1, 201):
                set_progress(core, job_id, value)
                assert progress_value(client, job_id) == value
        finally:
            stop.set()
        for seen in (p.result() for p in pollers):
            assert seen == sorted(seen)  # nor does any poller's next poll go back


def test_a_write_after_the_connection_is_killed_shows_at_the_next_poll(client, core, live_cache, clean_redis,
                                                                       monkeypatch):
    job_id = queued_job(client)
    parked = threading.Event()

    def park(timeout):  # the listener stops noticing anything: only the polls can see the connection die
        parked.set()
        return live_cache.stopped.wait()

    monkeypatch.setattr(live_cache.subscriber, "wait", park)
    set_progress(core, job_id, 3)  # wakes the listener, which parks
    eventually(parked.is_set, timeout=5)
    eventually(lambda: progress_value(client, job_id) == 3)
    assert progress_value(client, job_id) == 3 and job_id in live_cache.entries
    assert clean_redis.client_kill_filter(_type="pubsub") >= 1
    set_progress(core, job_id, 4)
    assert progress_value(client, job_id) == 4


@pytest.mark.parametrize("progress", [
    {"phase": "sampling", "progress": {"value": 2, "max": 20}, "message": "Étape 2 ✓"},
    {"phase": "sampling", "progress": {"value": 2, "max": 20}, "message": "Étape 2 ✓", "updated_at": 1700000000.25},
], ids=["stamped-per-poll", "updated_at-from-progress"])
def test_the_cached_json_is_what_jsonify_makes_of_the_status(app, client, core, web_core, live_cache, progress):
    job_id = client.post("/api/jobs", json={"prompt": "café 🌸", "steps": 20}).json["id"]
    core.backend.store_result(job_id, progress, "PROGRESS")
    eventually(lambda: client.get(f"/api/jobs/{job_id}").json["state"] == "PROGRESS")
    assert job_id in live_cache.entries
    body = client.get(f"/api/jobs/{job_id}").data
    status = web_core.statuses.job_status(job_id)  # read afresh
    assert status["request"]["prompt"] == "café 🌸"
    with app.app_context():
        assert body == jsonify({**status, "updated_at": json.loads(body)["updated_at"]}).get_data()


def test_a_queued_job_shows_its_new_position_at_the_next_poll(client, jobs, live_cache):
    first, _, last = (queued_job(client) for _ in range(3))

    def position() -> int:
        return client.get(f"/api/jobs/{last}").json["queue"]["position"]

    assert [position(), position()] == [3, 3]
    jobs.cancel(first)  # from another process: this web process is not told
    assert position() == 2


@pytest.fixture
def key_cache(redis_server, clean_redis):
    """A SnapshotCache of the plain keys 'k:<id>' (values are what GET returns)."""
    cache: SnapshotCache[bytes | None] = SnapshotCache(redis_server.url, ("k:",))
    assert cache.wait_live(10)
    yield cache
    cache.stop()


def test_a_read_overtaken_by_a_write_is_not_kept(key_cache, clean_redis):
    clean_redis.set("k:1", "old")
    loads = itertools.count()

    def read_then_overtaken() -> bytes | None:
        value = clean_redis.get("k:1")
        if next(loads) == 0:
            clean_redis.set("k:1", "new")  # lands while our "old" is still on its way back
            eventually(lambda: "1" not in key_cache.reading, timeout=2)
        return value

    assert key_cache.get("1", read_then_overtaken, keep=bool) == b"old"
    assert key_cache.get("1", read_then_overtaken, keep=bool) == b"new"
    assert key_cache.get("1", lambda: pytest.fail("read again though nothing changed"), keep=bool) == b"new"


def test_a_failed_read_leaves_nothing_behind(key_cache):
    def failing() -> bytes | None:
        raise redis.ConnectionError("Redis went away mid-read")

    with pytest.raises(redis.ConnectionError):
        key_cache.get("1", failing, keep=bool)
    assert not key_cache.reading and not key_cache.entries


def test_flush_drops_everything(key_cache, clean_redis):
    clean_redis.set("k:1", "v")
    assert key_cache.get("1", lambda: clean_redis.get("k:1"), keep=bool) == b"v"
    clean_redis.flushall()
    eventually(lambda: not key_cache.entries, timeout=2)


def test_losing_redis_drops_everything_and_it_resumes(key_cache, redis_server):
    writer = redis.Redis.from_url(redis_server.url)
    writer.set("k:1", "before")
    assert key_cache.get("1", lambda: writer.get("k:1"), keep=bool) == b"before"
    redis_server.stop()
    eventually(lambda: not key_cache.live and not key_cache.entries, timeout=5)
    redis_server.start()
    assert key_cache.wait_live(10)
    writer.set("k:1", "after")
    assert key_cache.get("1", lambda: writer.get("k:1"), keep=bool) == b"after"
