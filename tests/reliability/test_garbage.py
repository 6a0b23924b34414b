"""A ComfyUI that answers garbage: the job fails with a reason naming it, and the worker carries on."""
from __future__ import annotations

import time

import pytest

from tests.reliability.tally import finish, prompts_per_job, record

SMALL = {"width": 64, "height": 64, "steps": 20}


@pytest.mark.parametrize("route,faults,reason", [
    ("prompt", {}, "POST /prompt answered non-JSON"),
    ("view", {}, "returned an output that is not an image"),
    ("history", {"drop_ws_after": 12}, "answered non-JSON"),
    ("queue", {"drop_ws_after": 12}, "GET /queue answered list"),
])
def test_garbage_fails_the_job_not_the_worker(jobs, start_simulator, start_worker, route, faults, reason):
    sim = start_simulator(garbage=route, **faults)
    worker = start_worker(sim)
    job_id, _ = jobs.submit({"prompt": f"garbage from {route}", **SMALL})
    started = time.monotonic()
    status = finish(jobs, [job_id], timeout=60)[job_id]
    record("ComfyUI answers garbage", {job_id: status}, prompts_per_job([sim], [job_id]),
           time.monotonic() - started)
    assert status["state"] == "FAILURE"
    assert reason in status["error"]["reason"] and sim.url in status["error"]["reason"]
    sim.set(garbage="", drop_ws_after=0)
    after, _ = jobs.submit({"prompt": "back to normal", **SMALL})
    assert finish(jobs, [after], timeout=60)[after]["state"] == "SUCCESS"
    assert worker.process.poll() is None
