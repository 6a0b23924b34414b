"""Terminal states are final: whatever any reader has seen as SUCCESS, FAILURE or CANCELLED never changes, and the
answer to a cancel is the truth. The races are widened with the simulator's own delays, never with sleeps in
product code."""
from __future__ import annotations

import signal

import pytest
import requests
from celery.exceptions import TaskRevokedError
from celery.result import AsyncResult

from app.celery_app import TASK_NAME
from testkit.waiting import eventually

SMALL = {"width": 64, "height": 64}


def last_message(sim, job_id: str) -> str:
    """The type of the last execution message ComfyUI recorded in the prompt's history."""
    entry = eventually(lambda: sim.recorded_history(job_id), timeout=10)
    return entry["status"]["messages"][-1][0]


def ignored(worker, job_id: str) -> bool:
    return f"Task {TASK_NAME}[{job_id}] ignored" in worker.log()


def test_a_cancel_during_the_download_is_final(python_client, jobs, start_simulator, start_worker, live_web):
    sim = start_simulator(step_seconds=0.02, view_delay=2.0)
    worker = start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "cancelled while its image downloads", "steps": 3, **SMALL})
    writes = jobs.state_writes(job_id)
    jobs.wait_for(job_id, lambda s: s.get("phase") == "saving")
    answer = requests.delete(f"{live_web.url}/api/jobs/{job_id}", timeout=5).json()
    assert answer["state"] == "CANCELLED"
    eventually(lambda: ignored(worker, job_id), timeout=20)  # the download ended; the worker tried to finish
    assert jobs.status(job_id)["state"] == "CANCELLED"
    assert requests.get(f"{live_web.url}/status/{job_id}", timeout=5).json()["status"] == "failed"
    assert requests.get(f"{live_web.url}/api/jobs/{job_id}/images/0", timeout=5).status_code == 404
    assert python_client.job(job_id).wait(timeout=5)["state"] == "CANCELLED"
    with pytest.raises(TaskRevokedError):
        AsyncResult(job_id, app=jobs.core).get(timeout=5)
    assert [state for state in writes.states() if state in ("SUCCESS", "FAILURE", "REVOKED")] == ["REVOKED"]


def test_a_cancel_as_the_prompt_ends_is_final_and_its_images_are_never_stored(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.01, success_delay=1.5)  # the cancel lands between the last node and the end
    worker = start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "cancelled as it ends", "steps": 2, **SMALL})
    writes = jobs.state_writes(job_id)
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["overall_percent"] >= 100, timeout=20)
    assert jobs.cancel(job_id)["state"] == "CANCELLED"
    eventually(lambda: ignored(worker, job_id), timeout=20)
    assert last_message(sim, job_id) == "execution_success"  # ComfyUI finished it: the worker chose not to collect
    assert jobs.core.outputs.load(job_id, 0) is None
    assert jobs.meta(job_id)["status"] == "REVOKED" and jobs.status(job_id)["state"] == "CANCELLED"
    assert [state for state in writes.states() if state in ("SUCCESS", "FAILURE", "REVOKED")] == ["REVOKED"]


def test_a_cancel_after_success_answers_success(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.01)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "done before the cancel", "steps": 2, **SMALL})
    assert jobs.wait_terminal(job_id, 30)["state"] == "SUCCESS"
    assert jobs.cancel(job_id)["state"] == "SUCCESS"
    assert jobs.status(job_id)["state"] == "SUCCESS" and jobs.meta(job_id)["status"] == "SUCCESS"
    assert not jobs.core.records.cancel_requested(job_id)


def test_a_cancel_whose_interrupt_comes_back_as_an_execution_error_ends_cancelled(jobs, start_simulator,
                                                                                  start_worker):
    sim = start_simulator(step_seconds=0.1, interrupt_as_error=True)
    worker = start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "its node turns the interrupt into an error", "steps": 50, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 2)
    assert jobs.cancel(job_id)["state"] == "CANCELLED"
    eventually(lambda: ignored(worker, job_id), timeout=20)
    assert last_message(sim, job_id) == "execution_error"  # ComfyUI did call it an error
    assert jobs.status(job_id)["state"] == "CANCELLED" and jobs.meta(job_id)["status"] == "REVOKED"


def test_a_cancelled_job_whose_comfyui_dies_does_not_end_failure(jobs, start_simulator, start_worker):
    first = start_simulator(step_seconds=0.1, exit_at_step=2)
    second = start_simulator(step_seconds=0.5, exit_at_step=4, ignore_interrupt=True)
    start_worker(first, gpu=0, WORKER_HEARTBEAT=5)
    job_id, _ = jobs.submit({"prompt": "both its ComfyUIs die", "steps": 30, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "QUEUED" and s.get("message") == "Retrying on another GPU",
                  timeout=30)
    last = start_worker(second, gpu=1, WORKER_HEARTBEAT=5)  # its one retry (COMFYUI_RETRIES=1) goes here
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s.get("comfyui_url") == second.url
                  and s["progress"]["value"] >= 1, timeout=30)
    assert jobs.cancel(job_id)["state"] == "CANCELLED"
    # Its ComfyUI ignores the interrupt and then dies: the retries are used up, which wrote FAILURE before.
    eventually(lambda: not second.alive(), timeout=20)
    eventually(lambda: ignored(last, job_id), timeout=20)
    assert jobs.meta(job_id)["status"] == "REVOKED" and jobs.status(job_id)["state"] == "CANCELLED"


@pytest.mark.parametrize("terminate", [False, True], ids=["revoke", "revoke-terminate"])
def test_a_revoke_of_a_running_job_cancels_it_like_delete(jobs, start_simulator, start_worker, terminate):
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "revoked by an operator", "steps": 60, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 2)
    jobs.core.control.revoke(job_id, terminate=terminate)  # what Flower's Revoke / Terminate buttons send
    final = jobs.wait_terminal(job_id, timeout=20)
    assert final["state"] == "CANCELLED"
    eventually(lambda: sim.posts("/interrupt", job_id))
    assert last_message(sim, job_id) == "execution_interrupted"
    eventually(lambda: ignored(worker, job_id), timeout=20)  # its execution has ended, writing nothing more
    assert jobs.meta(job_id)["status"] == "REVOKED"
    assert "Traceback" not in worker.log()


def test_a_redelivered_copy_of_a_failed_job_does_nothing(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.01, fail_node="VAEDecode")
    worker = start_worker(sim)
    request = {"prompt": "fails once, for good", "steps": 2, "seed": 5, **SMALL}
    job_id, _ = jobs.submit(request)
    assert jobs.wait_terminal(job_id, 30)["state"] == "FAILURE"
    sim.set(fail_node="")
    writes = jobs.state_writes(job_id)
    jobs.core.send_task(TASK_NAME, kwargs=request, task_id=job_id)  # a stale copy of its message comes back
    # The intake drops it: it is never handed to a worker.
    assert jobs.core.redis.llen(jobs.core.settings.queue_name) == 0 and jobs.core.dispatcher.length() == 0
    assert worker.log().count(f"Task {TASK_NAME}[{job_id}] received") == 1
    assert writes.states() == []  # not even STARTED
    assert jobs.meta(job_id)["status"] == "FAILURE" and jobs.status(job_id)["state"] == "FAILURE"
    assert sim.prompts_posted(job_id) == 1


def test_a_job_that_used_up_its_retries_leaves_the_queue_index(jobs, start_simulator, start_worker):
    sim = start_simulator(refuse_prompt=-1)
    worker = start_worker(sim)
    failed, _ = jobs.submit({"prompt": "its ComfyUI refuses everything", **SMALL})
    assert jobs.wait_terminal(failed, timeout=90)["state"] == "FAILURE"
    worker.signal(signal.SIGTERM)
    assert worker.process is not None
    worker.process.wait(20)
    waiting, _ = jobs.submit({"prompt": "next in line", **SMALL})
    assert jobs.status(waiting)["queue"]["position"] == 1
    assert jobs.core.dispatcher.length() == 1
