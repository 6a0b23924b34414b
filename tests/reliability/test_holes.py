"""Smaller holes a review found: a download blip, stale worker entries, the directory store's sweep, jobs sent
with a raw `send_task` (a made-up id, no seed, the request as one positional dict)."""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from app.celery_app import TASK_NAME
from app.outputs import DirectoryOutputStore
from testkit.images import image_bytes

SMALL = {"width": 64, "height": 64}
PNG = image_bytes((1, 1))


def test_a_blip_while_downloading_hands_the_job_back_instead_of_failing_it(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.01, fail_view=6)  # more 500s than one download's five attempts
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "its first download fails", "steps": 2, **SMALL})
    final = jobs.wait_terminal(job_id, timeout=60)
    assert final["state"] == "SUCCESS", final
    assert final["images"] and sim.prompts_posted(job_id) == 1  # collected from the history, not run again
    assert sim.set()["fail_view"] == 0


def test_heartbeats_forget_workers_that_are_gone(core, clean_redis):
    gone = time.time() - 3600
    clean_redis.zadd("t2i:workers", {"gpu0@old-container": gone})
    clean_redis.zadd("t2i:ready", {"gpu0@old-container": gone})
    core.fleet.heartbeat("gpu0@live", {"gpu": 0}, True, interval=0.5)
    assert [m.decode() for m in clean_redis.zrange("t2i:workers", 0, -1)] == ["gpu0@live"]
    assert [m.decode() for m in clean_redis.zrange("t2i:ready", 0, -1)] == ["gpu0@live"]


def test_workers_sweeping_the_same_directory_at_once_do_not_fail(tmp_path):
    stores = [DirectoryOutputStore(expires=60, root=tmp_path) for _ in range(4)]
    stores[0].SWEEP_BATCH = 10_000
    for n in range(1500):
        (tmp_path / f"{uuid.UUID(int=n)}").mkdir()
    old = time.time() - 3600
    for folder in tmp_path.iterdir():
        os.utime(folder, (old, old))
    errors: list[BaseException] = []

    def sweep(store: DirectoryOutputStore) -> None:
        try:
            store.sweep()
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever a sweep raised
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and list(tmp_path.iterdir()) == []


def test_the_directory_store_sweeps_at_most_once_a_minute_in_bounded_batches(tmp_path, monkeypatch):
    store = DirectoryOutputStore(expires=60, root=tmp_path)
    monkeypatch.setattr(DirectoryOutputStore, "SWEEP_BATCH", 3)
    sweeps = []
    monkeypatch.setattr(DirectoryOutputStore, "sweep", lambda self: sweeps.append(1))
    for _ in range(5):
        store.save(str(uuid.uuid4()), [PNG])
    assert len(sweeps) == 1
    monkeypatch.undo()
    names = [str(uuid.UUID(int=n)) for n in range(7)]
    old = time.time() - 3600
    for name in names:
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (old, old))
    batch = DirectoryOutputStore(expires=60, root=tmp_path)
    batch.SWEEP_BATCH = 3
    batch.sweep()
    assert sum(1 for name in names if (tmp_path / name).exists()) == 4  # three looked at, three removed


def test_the_directory_store_refuses_what_is_not_a_job_id(tmp_path):
    store = DirectoryOutputStore(expires=60, root=tmp_path)
    for bad in ("../../etc", "a/b", "", "x" * 36):
        with pytest.raises(ValueError):
            store.save(bad, [PNG])
        with pytest.raises(ValueError):
            store.load(bad, 0)


def test_a_raw_task_with_a_made_up_id_fails_with_a_clear_reason(core, clean_redis, start_simulator, start_worker):
    sim = start_simulator()
    start_worker(sim)
    result = core.send_task(TASK_NAME, kwargs={"prompt": "raw", **SMALL}, task_id="../../job-1")
    with pytest.raises(Exception) as caught:
        result.get(timeout=30)
    assert "a job id must be a UUID" in str(caught.value)
    assert clean_redis.keys("*job-1*") == [b"celery-task-meta-../../job-1"]  # only the answer to its sender
    assert not any(r["path"] == "/prompt" for r in sim.requests_seen())


def test_a_raw_task_without_a_seed_keeps_one_seed_across_executions(jobs, start_simulator, start_worker):
    dying = start_simulator(step_seconds=0.1, exit_at_step=2)
    healthy = start_simulator(step_seconds=0.01)
    start_worker(dying, gpu=0, WORKER_HEARTBEAT=5)
    job_id = jobs.core.send_task(TASK_NAME, kwargs={"prompt": "no seed given", "steps": 4, **SMALL}).id
    start_worker(healthy, gpu=1)  # the first execution dies with its ComfyUI; the job is handed back here
    final = jobs.wait_terminal(job_id, timeout=60)
    assert final["state"] == "SUCCESS", final
    fixed = jobs.core.records.job(job_id)["seed"]
    assert final["seed"] == int(fixed)
    graph = healthy.recorded_history(job_id)["prompt"][2]
    seeds = {node["inputs"]["seed"] for node in graph.values() if "seed" in node.get("inputs", {})}
    assert seeds == {int(fixed)}
    assert healthy.prompts_posted(job_id) == 1


def test_a_raw_task_may_carry_the_request_as_one_positional_dict(jobs, start_simulator, start_worker):
    sim = start_simulator()
    start_worker(sim)
    request = {"prompt": "sent as one dict", "steps": 2, "seed": 11, **SMALL}
    job_id = jobs.core.send_task(TASK_NAME, args=[request], queue="text2img").id
    final = jobs.wait_terminal(job_id, timeout=30)
    assert final["state"] == "SUCCESS" and final["seed"] == 11
    assert final["request"]["prompt"] == "sent as one dict"
    bad = jobs.core.send_task(TASK_NAME, args=[request, "extra"]).id
    failed = jobs.wait_terminal(bad, timeout=30)
    assert failed["state"] == "FAILURE"
    assert "keyword fields or as one positional dict" in failed["error"]["reason"]
    assert jobs.meta(bad)["status"] == "FAILURE" and jobs.status(bad)["state"] == "FAILURE"
