"""Faults around running jobs: killed and stopped workers, a restarted Redis, a ComfyUI that dies, dropped
sockets. The promise: every accepted job ends in exactly one terminal state, and no prompt runs twice."""
from __future__ import annotations

import random
import signal
import time

import redis

from testkit.images import pixels
from testkit.jobs import reference_pixels
from testkit.waiting import eventually
from tests.reliability.tally import finish, prompts_per_job, record

SMALL = {"width": 64, "height": 64}
FAST_REDELIVERY = {"VISIBILITY_TIMEOUT": 3}


def test_sigkill_while_sampling_resumes_the_prompt(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    first = start_worker(sim, gpu=0, **FAST_REDELIVERY)
    job_id, _ = jobs.submit({"prompt": "survive", "steps": 40, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 3)
    first.signal(signal.SIGKILL)
    killed = time.monotonic()
    start_worker(sim, gpu=1, **FAST_REDELIVERY)
    finals = finish(jobs, [job_id], timeout=60)
    row = record("worker SIGKILL while sampling", finals, prompts_per_job([sim], [job_id]), time.monotonic() - killed)
    assert finals[job_id]["state"] == "SUCCESS" and finals[job_id]["worker"].startswith("gpu1@")
    assert row.lost == 0 and row.duplicated == 0


def test_sigkill_while_downloading_collects_the_finished_prompt(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.05, view_delay=3.0)
    first = start_worker(sim, gpu=0, **FAST_REDELIVERY)
    job_id, _ = jobs.submit({"prompt": "downloading", "steps": 5, **SMALL})
    jobs.wait_for(job_id, lambda s: s.get("phase") == "saving")
    first.signal(signal.SIGKILL)
    killed = time.monotonic()
    sim.set(view_delay=0)
    start_worker(sim, gpu=1, **FAST_REDELIVERY)
    finals = finish(jobs, [job_id], timeout=60)
    row = record("worker SIGKILL while downloading", finals, prompts_per_job([sim], [job_id]),
                 time.monotonic() - killed)
    assert finals[job_id]["state"] == "SUCCESS" and row.duplicated == 0 and row.lost == 0


def test_sigterm_finishes_the_jobs_in_hand_and_leaves_the_rest(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.05)
    first = start_worker(sim, gpu=0)
    job_ids = [jobs.submit({"prompt": f"term {n}", "steps": 30, **SMALL})[0] for n in range(4)]
    jobs.wait_for(job_ids[0], lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 3)
    jobs.wait_for(job_ids[1], lambda s: s.get("phase") == "submitted")  # pipelined: waiting in ComfyUI's queue
    first.signal(signal.SIGTERM)
    stopped = time.monotonic()
    first.process.wait(30)
    # Warm shutdown: it finished the running job and the one whose prompt already waited in ComfyUI's queue.
    assert [jobs.status(j)["state"] for j in job_ids] == ["SUCCESS", "SUCCESS", "QUEUED", "QUEUED"]
    start_worker(sim, gpu=1)
    finals = finish(jobs, job_ids, timeout=60)
    row = record("worker SIGTERM mid-job", finals, prompts_per_job([sim], job_ids), time.monotonic() - stopped)
    assert [s["state"] for s in finals.values()] == ["SUCCESS"] * 4 and row.duplicated == 0


def test_redis_restart_loses_no_accepted_job(jobs, redis_server, start_gpus):
    sims = start_gpus(2, step_seconds=0.05)
    job_ids = [jobs.submit({"prompt": f"redis {n}", "steps": 40, **SMALL})[0] for n in range(6)]
    jobs.wait_for(job_ids[0], lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 5)
    redis_server.stop()
    time.sleep(1.0)  # the fault: Redis is down for a second
    redis_server.start()
    restarted, restarted_at = time.monotonic(), time.time()
    later = jobs.submit({"prompt": "after the restart", "steps": 5, **SMALL})[0]
    finals = finish(jobs, job_ids + [later], timeout=120)
    row = record("Redis restart (AOF)", finals, prompts_per_job(sims, job_ids + [later]),
                 time.monotonic() - restarted)
    assert [s["state"] for s in finals.values()] == ["SUCCESS"] * 7
    assert row.lost == 0 and row.duplicated == 0
    # the workers reconnected with their health checks still running: both heartbeat again, and stay fresh
    heartbeats = redis.Redis.from_url(redis_server.url)
    eventually(lambda: len(heartbeats.zrangebyscore("t2i:ready", restarted_at, "+inf")) == 2)
    assert jobs.core.fleet.ready_count() == 2


def test_comfyui_dying_mid_run_moves_the_job_and_its_worker_waits(jobs, start_simulator, start_worker):
    dying = start_simulator(step_seconds=0.05, exit_at_step=5)
    healthy = start_simulator(step_seconds=0.05)
    # Health checks every 5 s, as in production: the job learns of the dead ComfyUI long before they do.
    start_worker(dying, gpu=0, WORKER_HEARTBEAT=5)
    job_id, _ = jobs.submit({"prompt": "moved", "steps": 20, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 1, timeout=30)
    # Handed back to the queue, the job waits there: its worker stops taking jobs before it hands the job back,
    # so it does not try it again on its dead ComfyUI (with COMFYUI_RETRIES=1 that would fail the job).
    jobs.wait_for(job_id, lambda s: s["state"] == "QUEUED", timeout=30)
    time.sleep(3.0)  # the point: it stays queued past the retry's countdown
    assert jobs.status(job_id)["state"] == "QUEUED"
    start_worker(healthy, gpu=1)
    healthy_gpu_up = time.monotonic()
    finals = finish(jobs, [job_id], timeout=60)
    assert finals[job_id]["state"] == "SUCCESS" and finals[job_id]["comfyui_url"] == healthy.url
    row = record("ComfyUI exits mid-run", finals, {job_id: 1}, time.monotonic() - healthy_gpu_up)
    assert row.lost == 0
    # the worker of the dead ComfyUI takes nothing until it is back; then it works again
    assert not dying.alive()
    dying.settings["exit_at_step"] = 0
    dying.start()
    eventually(lambda: jobs.core.fleet.ready_count() == 2, timeout=15)
    others = [jobs.submit({"prompt": f"after {n}", "steps": 30, **SMALL})[0] for n in range(4)]
    done = finish(jobs, others, timeout=60)
    assert {s["state"] for s in done.values()} == {"SUCCESS"}
    assert {s["worker"].split("@")[0] for s in done.values()} == {"gpu0", "gpu1"}


def test_websocket_dropped_at_random_points_over_100_runs(jobs, start_simulator, start_gpus):
    rng = random.Random(100)
    sims = start_gpus(2, step_seconds=0.01)
    reference = start_simulator(step_seconds=0.0)
    requests_ = [{"prompt": f"drop {n % 10}", "seed": n % 10, "steps": 8, **SMALL} for n in range(100)]
    expected = {n: reference_pixels(reference, requests_[n], n) for n in range(10)}
    job_ids = []
    for batch in range(10):
        for sim in sims:
            sim.set(drop_ws_after=rng.randint(3, 30))
        job_ids += [jobs.submit(request)[0] for request in requests_[batch * 10:(batch + 1) * 10]]
        finish(jobs, job_ids[-10:], timeout=60)
    finals = finish(jobs, job_ids, timeout=60)
    slowest = max(s.get("timings", {}).get("total", 0.0) for s in finals.values())
    row = record("websocket dropped at random points", finals, prompts_per_job(sims, job_ids), slowest, runs=100)
    assert row.lost == 0 and row.duplicated == 0
    for n, job_id in enumerate(job_ids):
        assert finals[job_id]["state"] == "SUCCESS", finals[job_id]
        assert pixels(jobs.core.outputs.load(job_id, 0)) == expected[n % 10], job_id
    assert jobs.meta(job_ids[-1])["status"] == "SUCCESS"
