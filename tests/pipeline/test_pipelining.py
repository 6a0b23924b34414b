"""Prompt pipelining (workers/slots.py): near the end of a job the worker takes the next one, whose prompt
waits in ComfyUI's queue. These tests hold it to what the README promises: the GPU gets its next prompt before
the current one ends, without breaking cancellation, per-job progress, crash recovery or fair distribution
across GPUs."""
from __future__ import annotations

import signal
import time

import pytest

from testkit.jobs import Jobs
from testkit.services import SimulatorProcess
from testkit.waiting import eventually

SMALL = {"width": 64, "height": 64}
STEP = 0.05  # simulator seconds per sampler step


def posted_at(sim: SimulatorProcess, job_id: str) -> float:
    return sim.posts("/prompt", job_id)[0]["t"]


def event_at(sim, name: str, job_id: str) -> float:
    return next(e["t"] for e in sim.events(name) if e["prompt_id"] == job_id)


def started_prompts(sim) -> list[str]:
    return [e["prompt_id"] for e in sim.events("start")]


def job(jobs: Jobs, steps: int, prompt: str = "pipelined") -> str:
    return jobs.submit({"prompt": prompt, "steps": steps, **SMALL})[0]


@pytest.mark.parametrize("lookahead, pipelined", [(2, True), (0, False)])
def test_next_prompt_is_queued_in_comfyui_before_the_current_one_ends(jobs, start_simulator, start_worker,
                                                                       lookahead, pipelined):
    sim = start_simulator(step_seconds=STEP, log_events=True)
    start_worker(sim, PIPELINE_LOOKAHEAD=lookahead)
    job_ids = [job(jobs, 20, f"backlog {n}") for n in range(4)]
    finals = [jobs.wait_terminal(job_id, 60) for job_id in job_ids]

    assert [s["state"] for s in finals] == ["SUCCESS"] * 4
    assert started_prompts(sim) == job_ids  # in order, each once
    for current, following in zip(job_ids, job_ids[1:]):
        waiting = posted_at(sim, following) < event_at(sim, "done", current)
        assert waiting is pipelined, (current, following)


def test_two_idle_gpus_each_take_one_of_two_jobs(jobs, start_gpus):
    start_gpus(2, step_seconds=STEP)
    job_ids = [job(jobs, 40, "first"), job(jobs, 40, "second")]
    finals = [jobs.wait_terminal(job_id, 60) for job_id in job_ids]
    assert {s["worker"].split("@")[0] for s in finals} == {"gpu0", "gpu1"}


def test_a_busy_gpu_takes_no_second_job_until_its_job_is_near_the_end(jobs, start_gpus):
    """Short jobs go to the idle GPU; none waits behind the long job on the busy one."""
    start_gpus(2, {"PIPELINE_LOOKAHEAD": 1}, step_seconds=STEP)
    long_job = job(jobs, 100, "five seconds")
    busy = jobs.wait_for(long_job, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 2)["worker"]
    short_jobs = [job(jobs, 3, f"short {n}") for n in range(5)]
    finals = [jobs.wait_terminal(job_id, 60) for job_id in short_jobs]

    assert all(s["state"] == "SUCCESS" and s["worker"] != busy for s in finals), [s["worker"] for s in finals]
    assert jobs.status(long_job)["state"] == "PROGRESS"  # the short ones ran while it was still far from its end
    assert jobs.wait_terminal(long_job, 60)["state"] == "SUCCESS"


def test_backlog_is_spread_evenly_over_gpus(jobs, start_gpus):
    start_gpus(2, step_seconds=STEP)
    job_ids = [job(jobs, 6, f"even {n}") for n in range(12)]
    finals = [jobs.wait_terminal(job_id, 60) for job_id in job_ids]
    per_gpu = [sum(s["worker"].startswith(f"gpu{gpu}@") for s in finals) for gpu in range(2)]
    assert sum(per_gpu) == 12 and abs(per_gpu[0] - per_gpu[1]) <= 2, per_gpu


@pytest.fixture
def sim(start_gpus):
    """One simulated GPU, its prompt events logged, with its worker."""
    return start_gpus(1, step_seconds=STEP, log_events=True)[0]


def queued_behind(jobs: Jobs, sim: SimulatorProcess, running: str, waiting: str) -> None:
    """Waits until `running` samples on `sim` and `waiting` has been posted to it but has not started."""
    jobs.wait_for(running, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 1)
    eventually(lambda: sim.prompts_posted(waiting) == 1)
    assert waiting not in started_prompts(sim)


def test_cancelling_the_job_waiting_in_comfyuis_queue_deletes_its_prompt(jobs, sim):
    running, waiting = job(jobs, 40, "keeps running"), job(jobs, 40, "cancelled while queued")
    queued_behind(jobs, sim, running, waiting)

    assert jobs.status(waiting)["phase"] == "submitted"
    jobs.cancel(waiting)
    assert jobs.wait_terminal(waiting, 30)["state"] == "CANCELLED"
    eventually(lambda: [r for r in sim.requests_seen() if r.get("path") == "/queue" and waiting in r.get("delete", [])])
    done = jobs.wait_terminal(running, 30)
    assert done["state"] == "SUCCESS" and done["progress"]["value"] == 40
    assert waiting not in started_prompts(sim)


def test_cancelling_the_running_job_lets_the_queued_one_run(jobs, sim):
    running, waiting = job(jobs, 40, "cancelled while running"), job(jobs, 10, "runs next")
    queued_behind(jobs, sim, running, waiting)

    jobs.cancel(running)
    assert jobs.wait_terminal(running, 30)["state"] == "CANCELLED"
    after = jobs.wait_terminal(waiting, 30)
    assert after["state"] == "SUCCESS" and after["progress"]["value"] == 10
    assert started_prompts(sim) == [running, waiting]


def test_each_job_reports_only_its_own_progress(jobs, sim):
    running, waiting = job(jobs, 40, "forty steps"), job(jobs, 7, "seven steps")
    seen: list[dict] = []

    def running_ended() -> bool:
        """Records the waiting job's status while the running one still runs."""
        if jobs.status(running)["state"] != "PROGRESS":
            return True
        seen.append(jobs.status(waiting))
        return False

    queued_behind(jobs, sim, running, waiting)
    eventually(running_ended, timeout=30)
    final = jobs.wait_terminal(waiting, 30, seen)

    assert final["state"] == "SUCCESS"
    while_queued = [s for s in seen if s["state"] == "PROGRESS" and s.get("phase") == "submitted"]
    assert while_queued and all(s["progress"]["value"] == 0 for s in while_queued)
    assert {s["progress"]["max"] for s in seen if s.get("progress") and s["progress"]["max"]} == {7}


def test_time_limit_counts_from_the_start_on_the_gpu_not_the_wait_in_comfyuis_queue(jobs, start_simulator,
                                                                                    start_worker):
    sim = start_simulator(step_seconds=STEP, log_events=True)
    start_worker(sim, JOB_TIME_LIMIT=2.5)
    running, waiting = job(jobs, 36, "1.8 s"), job(jobs, 36, "waits, then 1.8 s")
    queued_behind(jobs, sim, running, waiting)
    assert jobs.wait_terminal(running, 30)["state"] == "SUCCESS"
    final = jobs.wait_terminal(waiting, 30)
    assert final["state"] == "SUCCESS", final
    assert event_at(sim, "done", waiting) - posted_at(sim, waiting) > 2.5  # its whole life was past the limit


def test_sigkill_with_a_prompt_waiting_in_comfyuis_queue_runs_each_prompt_once(jobs, start_simulator,
                                                                              start_worker):
    sim = start_simulator(step_seconds=STEP, log_events=True)
    first = start_worker(sim, gpu=0, VISIBILITY_TIMEOUT=3)
    running, waiting = job(jobs, 60, "killed while running"), job(jobs, 20, "killed while queued")
    queued_behind(jobs, sim, running, waiting)
    first.signal(signal.SIGKILL)
    start_worker(sim, gpu=1, VISIBILITY_TIMEOUT=3)

    finals = [jobs.wait_terminal(job_id, 90) for job_id in (running, waiting)]
    assert [s["state"] for s in finals] == ["SUCCESS", "SUCCESS"]
    assert all(s["worker"].startswith("gpu1@") for s in finals)
    assert [sim.prompts_posted(job_id) for job_id in (running, waiting)] == [1, 1]
    assert started_prompts(sim) == [running, waiting]


def test_a_redelivered_copy_reaching_the_same_workers_slot_steps_aside(jobs, start_simulator, start_worker):
    """The broker hands a long job back after VISIBILITY_TIMEOUT while it still runs; the only worker takes the
    copy through its pipelining slot near the job's end. The copy must leave the job to the running execution."""
    sim = start_simulator(step_seconds=0.1, log_events=True)
    worker = start_worker(sim, VISIBILITY_TIMEOUT=2)
    job_id = job(jobs, 100, "ten seconds, redelivered after two")
    assert jobs.wait_terminal(job_id, 60)["state"] == "SUCCESS"
    eventually(lambda: "steps aside" in worker.log())
    assert worker.log().count(f"Task text2img.generate[{job_id}] received") == 2  # the copy did reach it
    # SUCCESS is stored before the task returns and Celery logs it
    eventually(lambda: worker.log().count(f"Task text2img.generate[{job_id}] succeeded") == 1)
    time.sleep(0.5)  # the point: no second success logged, as one would follow within this
    assert worker.log().count(f"Task text2img.generate[{job_id}] succeeded") == 1
    assert sim.prompts_posted(job_id) == 1 and started_prompts(sim) == [job_id]
