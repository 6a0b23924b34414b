"""A lost worker's job resumes in seconds, with the shipped defaults: no VISIBILITY_TIMEOUT, LEASE_TTL or
REAPER_INTERVAL set. Two GPUs; the worker running the job is killed (or frozen) while the prompt samples, while
its images download, and while the prompt waits in ComfyUI's queue; it is restarted at once, or never. Every
job ends once, with the right image, and no prompt is posted twice (the simulators' request logs)."""
from __future__ import annotations

import signal
import time
from typing import Iterator

import pytest

from app.celery_app import create_celery
from testkit.images import pixels
from testkit.jobs import Jobs, StateWrites, reference_pixels, template_graph
from testkit.metrics import fleet, value
from testkit.services import SimulatorProcess, WorkerProcess
from testkit.waiting import eventually
from tests.reliability.tally import finish, prompts_per_job, record
from workers.comfyui import ComfyUIClient

SMALL = {"width": 64, "height": 64}
# The two settings tests/conftest.py shortens for every worker, put back to their shipped values.
SHIPPED = {"WORKER_HEARTBEAT": 5, "COMFYUI_RETRIES": 3}
RESUME_WITHIN = 30.0  # seconds from the death to the job's prompt being followed again (the promise)


def occupy(sim: SimulatorProcess, steps: int) -> str:
    """Another client's prompt, running on `sim` so that the next prompt waits in ComfyUI's queue."""
    return ComfyUIClient(sim.url).submit(template_graph({"prompt": "other client", "steps": steps, **SMALL},
                                                        "other")).prompt_id


def followed_again_after(sims: list[SimulatorProcess], job_id: str, since: float) -> float:
    """Seconds from `since` to the first request about the job any simulator saw after it (the resumed execution
    asking where its prompt stands)."""
    times = [r["t"] for sim in sims for r in sim.requests_about(job_id) if "method" in r and r["t"] > since]
    assert times, f"no request about {job_id} after the death"
    return min(times) - since


def lose(worker: WorkerProcess, restart: bool) -> float:
    """kill -9 the worker; start it again at once (same name) if asked. Returns the time of death."""
    worker.signal(signal.SIGKILL)
    died = time.time()
    assert worker.process is not None
    worker.process.wait(10)
    if restart:
        worker.start()
    return died


def check_one_run(jobs: Jobs, sims: list[SimulatorProcess], job_id: str, request: dict,
                  reference: SimulatorProcess, scenario: str, died: float) -> dict:
    finals = finish(jobs, [job_id], timeout=90)
    resumed = followed_again_after(sims, job_id, died)
    row = record(scenario, finals, prompts_per_job(sims, [job_id]), resumed)
    final = finals[job_id]
    assert final["state"] == "SUCCESS", final
    assert row.lost == 0 and row.duplicated == 0
    assert sum(sim.prompts_posted(job_id) for sim in sims) == 1
    assert sum(1 for sim in sims for e in sim.events("start") if e["prompt_id"] == job_id) == 1  # ran once
    histories = [entry for sim in sims if (entry := sim.recorded_history(job_id))]
    assert len(histories) == 1 and histories[0]["status"]["completed"]
    assert pixels(jobs.core.outputs.load(job_id, 0)) == reference_pixels(reference, request, request["seed"])
    assert resumed < RESUME_WITHIN, resumed
    return final


@pytest.fixture
def two_gpus(start_simulator, start_worker):
    def start(**sim_settings):
        sims = [start_simulator(log_events=True, **sim_settings) for _ in range(2)]  # prompt starts, for checks
        workers = [start_worker(sim, gpu=gpu, **SHIPPED) for gpu, sim in enumerate(sims)]
        return sims, workers
    return start


def start_sampling(jobs: Jobs, two_gpus,
                   request: dict) -> tuple[list[SimulatorProcess], str, StateWrites, WorkerProcess]:
    """Two GPUs and the job sampling on one: (simulators, job id, its state writes, the worker running it)."""
    sims, workers = two_gpus(step_seconds=0.1)
    job_id, _ = jobs.submit(request)
    writes = jobs.state_writes(job_id)
    running = jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 3)
    return sims, job_id, writes, next(w for w in workers if w.name == running["worker"])


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "never-restarted"])
def test_sigkill_while_sampling(jobs, two_gpus, start_simulator, restart):
    request = {"prompt": "killed while sampling", "steps": 60, "seed": 7, **SMALL}
    sims, job_id, writes, victim = start_sampling(jobs, two_gpus, request)
    died = lose(victim, restart)
    lost = writes.recovering()
    assert victim.name in lost["message"] and "resume" in lost["message"]
    final = check_one_run(jobs, sims, job_id, request, start_simulator(step_seconds=0),
                          f"worker SIGKILL while sampling ({'restarted' if restart else 'never restarted'}), "
                          f"defaults", died)
    assert final["comfyui_url"] == victim.comfyui_url  # re-attached to the prompt where it ran
    assert value(fleet(jobs.core), "t2i_lease_recoveries_total") == 1


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "never-restarted"])
def test_sigkill_while_downloading(jobs, two_gpus, start_simulator, restart):
    sims, workers = two_gpus(step_seconds=0.02, view_delay=5.0)
    request = {"prompt": "killed while downloading", "steps": 5, "seed": 8, **SMALL}
    job_id, _ = jobs.submit(request)
    saving = jobs.wait_for(job_id, lambda s: s.get("phase") == "saving")
    victim = next(w for w in workers if w.name == saving["worker"])
    died = lose(victim, restart)
    for sim in sims:
        sim.set(view_delay=0)
    check_one_run(jobs, sims, job_id, request, start_simulator(step_seconds=0),
                  f"worker SIGKILL while downloading ({'restarted' if restart else 'never restarted'}), defaults",
                  died)


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "never-restarted"])
def test_sigkill_while_the_prompt_waits_in_comfyuis_queue(jobs, two_gpus, start_simulator, restart):
    sims, workers = two_gpus(step_seconds=0.1)
    request = {"prompt": "killed while queued", "steps": 5, "seed": 9, **SMALL}
    other = occupy(sims[0], steps=150)  # 15 s of another client's work on GPU 0
    workers[1].stop()  # so that GPU 0's worker takes the job and its prompt waits there
    job_id, _ = jobs.submit(request)
    eventually(lambda: sims[0].prompts_posted(job_id) == 1)
    workers[1].start()
    died = lose(workers[0], restart)
    final = check_one_run(jobs, sims, job_id, request, start_simulator(step_seconds=0),
                          f"worker SIGKILL while its prompt waits in ComfyUI's queue "
                          f"({'restarted' if restart else 'never restarted'}), defaults", died)
    assert final["comfyui_url"] == sims[0].url
    assert ComfyUIClient(sims[0].url).prompt_state(other).status == "done"


def test_sigkill_after_the_images_were_saved_but_before_success_collects_them_from_the_history(
        jobs, two_gpus, start_simulator):
    sims, workers = two_gpus(step_seconds=0.05, success_delay=15.0)  # the prompt "runs" 15 s past its SaveImage
    request = {"prompt": "killed between executed and success", "steps": 5, "seed": 12, **SMALL}
    job_id, _ = jobs.submit(request)
    # decoded and saved: every node has run (SaveImage's `executed` has gone out); execution_success is 15 s away
    done = jobs.wait_for(job_id, lambda s: (s.get("progress") or {}).get("overall_percent") == 100.0, timeout=30)
    victim = next(w for w in workers if w.name == done["worker"])
    died = lose(victim, restart=False)
    final = check_one_run(jobs, sims, job_id, request, start_simulator(step_seconds=0),
                          "worker SIGKILL after its images were saved, before execution_success, defaults", died)
    assert final["images"] and len(final["images"]) == 1


def test_worker_frozen_past_its_lease_stands_down_when_it_wakes(jobs, two_gpus, start_simulator):
    request = {"prompt": "frozen worker", "steps": 120, "seed": 10, **SMALL}
    sims, job_id, writes, victim = start_sampling(jobs, two_gpus, request)
    victim.signal(signal.SIGSTOP)
    frozen = time.time()
    writes.recovering()
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s.get("worker") not in (None, victim.name),
                  timeout=30)
    victim.signal(signal.SIGCONT)
    final = check_one_run(jobs, sims, job_id, request, start_simulator(step_seconds=0),
                          "worker frozen (SIGSTOP) past its lease, then woken, defaults", frozen)
    assert final["worker"] != victim.name
    eventually(lambda: "lost its lease" in victim.log(), timeout=15)
    time.sleep(2.0)  # the point: the woken execution has had time to write, if it were going to
    assert jobs.wait_for(job_id, lambda s: True)["state"] == "SUCCESS"
    assert f"Task text2img.generate[{job_id}] succeeded" not in victim.log()


@pytest.fixture
def shipped_jobs(settings, clean_redis) -> Iterator[Jobs]:
    """Jobs submitted by a process with the shipped WORKER_HEARTBEAT too, as every process of a deployment has:
    it judges which workers are online by their heartbeats."""
    core = create_celery(settings.replace(worker_heartbeat=float(SHIPPED["WORKER_HEARTBEAT"])))
    yield Jobs(core)
    core.close()


def test_a_job_handed_to_a_frozen_idle_worker_runs_elsewhere_once_its_heartbeat_is_stale(shipped_jobs, two_gpus):
    """The shipped WORKER_HEARTBEAT (5 s): a job handed to an idle worker that has frozen (its BRPOP still takes the
    message into its socket) is handed back by the reaper once the worker's heartbeat is stale, runs on the other
    GPU, and the woken worker's copy steps aside."""
    jobs = shipped_jobs
    sims, (victim, other) = two_gpus(step_seconds=0.1)
    other.stop()  # so that the job goes to the frozen worker, the only one waiting
    eventually(lambda: jobs.core.redis.zscore("t2i:waiting", victim.name) is not None, timeout=15)
    victim.signal(signal.SIGSTOP)
    frozen = time.time()
    job_id, _ = jobs.submit({"prompt": "handed to a frozen worker", "steps": 5, **SMALL})
    eventually(lambda: jobs.core.records.job(job_id).get("handed_to") == victim.name, timeout=10)
    other.start()
    final = jobs.wait_terminal(job_id, timeout=60)
    assert final["state"] == "SUCCESS" and final["worker"] == other.name, final
    assert jobs.core.records.job(job_id)["started_at"] - frozen > 10, "handed back once the heartbeat was stale"
    victim.signal(signal.SIGCONT)
    eventually(lambda: f"job {job_id} has ended or runs elsewhere" in victim.log(), timeout=15)
    assert sum(sim.prompts_posted(job_id) for sim in sims) == 1
    assert jobs.wait_for(job_id, lambda s: True)["state"] == "SUCCESS"
