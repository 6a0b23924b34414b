"""Dispatch on real workers and simulators (app/dispatch.py): each job only on a GPU that has what it needs,
priorities, fair shares between clients, the same checkpoint preferred, and a job whose only capable GPU is down
waiting and saying so."""
from __future__ import annotations

from testkit.jobs import Jobs
from testkit.waiting import eventually
from tests import graphs

SMALL = {"width": 64, "height": 64}
STEP = 0.05  # simulator seconds per sampler step


def worker_of(status: dict) -> str:
    return status["worker"].split("@")[0]


def started_at(jobs: Jobs, job_id: str) -> float:
    return jobs.core.records.job(job_id)["started_at"]


def test_mixed_jobs_each_run_only_on_a_gpu_that_can_run_them(jobs, core, start_simulator, start_worker):
    sims = [start_simulator(checkpoints="sd15.safetensors", step_seconds=STEP),
            start_simulator(checkpoints="sdxl.safetensors", step_seconds=STEP),
            start_simulator(checkpoints="sd15.safetensors,flux.safetensors", step_seconds=STEP),
            start_simulator(checkpoints="sd15.safetensors", custom_nodes="ImageSharpen", step_seconds=STEP)]
    workers = [start_worker(sim, gpu=gpu) for gpu, sim in enumerate(sims)]
    eventually(lambda: all(core.fleet.capabilities(worker.name) for worker in workers), timeout=10)
    sharpened = graphs.txt2img()
    sharpened["4"]["inputs"]["ckpt_name"] = "sd15.safetensors"
    sharpened["10"] = {"class_type": "ImageSharpen", "inputs": {"image": ["8", 0], "sharpen_radius": 1, "sigma": 1.0,
                                                                "alpha": 1.0}}
    sharpened["9"]["inputs"]["images"] = ["10", 0]
    capable = {"sdxl.safetensors": {"gpu1"}, "flux.safetensors": {"gpu2"}, "sd15.safetensors": {"gpu0", "gpu2", "gpu3"}}
    submitted = []
    for n in range(4):
        for checkpoint, gpus in capable.items():
            job_id, _ = jobs.submit({"prompt": f"{checkpoint} {n}", "checkpoint": checkpoint, "steps": 4, **SMALL})
            submitted.append((job_id, gpus))
        submitted.append((jobs.submit({"workflow": sharpened}, raw_allowed=True)[0], {"gpu3"}))
    for job_id, gpus in submitted:
        status = jobs.wait_terminal(job_id)
        assert status["state"] == "SUCCESS" and worker_of(status) in gpus, (status.get("request"), status["worker"])


def test_a_higher_priority_job_starts_before_every_lower_priority_job_queued(jobs, start_simulator, start_worker):
    start_worker(start_simulator(step_seconds=STEP), PIPELINE_LOOKAHEAD=0)
    running = jobs.submit({"prompt": "running", "steps": 20, **SMALL})[0]
    jobs.wait_for(running, lambda s: s["state"] == "PROGRESS")
    low = [jobs.submit({"prompt": f"low {n}", "steps": 2, "priority": 1, **SMALL})[0] for n in range(3)]
    normal = [jobs.submit({"prompt": f"normal {n}", "steps": 2, **SMALL})[0] for n in range(3)]
    urgent = jobs.submit({"prompt": "urgent", "steps": 2, "priority": 9, **SMALL})[0]
    assert [jobs.status(job_id)["queue"]["position"] for job_id in (urgent, *normal, *low)] == list(range(1, 8))
    order = sorted((urgent, *normal, *low), key=lambda job_id: started_at(jobs, jobs.wait_terminal(job_id)["id"]))
    assert order == [urgent, *normal, *low]


def test_fair_share_one_clients_backlog_does_not_starve_another_clients_job(jobs, start_gpus):
    """Read from the jobs' records after the fact (when bob's job was queued, its place in the order, when each job
    started), so that a slow test process sees the same thing as a fast one."""
    start_gpus(2, step_seconds=STEP)
    backlog = [jobs.submit({"prompt": f"a{n}", "steps": 4, "client": "alice", **SMALL})[0] for n in range(100)]
    single = jobs.submit({"prompt": "b", "steps": 4, "client": "bob", **SMALL})[0]
    jobs.wait_terminal(single, 60)
    for job_id in backlog:
        jobs.wait_terminal(job_id, 120)
    record = {job_id: jobs.core.records.job(job_id) for job_id in (*backlog, single)}
    queued_at = record[single]["created_at"]
    waiting_then = [job_id for job_id in backlog if record[job_id]["started_at"] > queued_at]
    placed_before = [job_id for job_id in waiting_then if record[job_id]["order"] < record[single]["order"]]
    assert len(placed_before) <= 2, "placed after at most one of alice's waiting jobs per GPU"
    ahead = [job_id for job_id in waiting_then if record[job_id]["started_at"] < record[single]["started_at"]]
    assert len(ahead) <= 2 * 2, "within one job time per GPU (and each GPU's pipelined job)"
    # Alice's jobs still run in the order she queued them: each GPU runs them in that order, and across the two
    # GPUs (each with its pipelined job) none starts before one queued more than four places earlier.
    gpu_start = {job_id: jobs.core.records.job(job_id)["running_since"] for job_id in backlog}
    for worker in {worker_of(jobs.status(job_id)) for job_id in backlog}:
        mine = [job_id for job_id in backlog if worker_of(jobs.status(job_id)) == worker]
        assert [gpu_start[job_id] for job_id in mine] == sorted(gpu_start[job_id] for job_id in mine)
    assert all(gpu_start[backlog[i]] <= gpu_start[backlog[j]] for i in range(100) for j in range(i + 5, 100))


def test_several_idle_gpus_prefer_the_one_that_ran_the_same_checkpoint(jobs, core, start_simulator, start_worker):
    sims = [start_simulator(checkpoints="sd15.safetensors,sdxl.safetensors", step_seconds=STEP) for _ in range(2)]
    workers = [start_worker(sim, gpu=gpu) for gpu, sim in enumerate(sims)]
    eventually(lambda: all(core.fleet.capabilities(worker.name) for worker in workers), timeout=10)
    first = {checkpoint: jobs.wait_terminal(jobs.submit({"prompt": checkpoint, "checkpoint": checkpoint, "steps": 2,
                                                          **SMALL})[0]) for checkpoint in ("sd15.safetensors",)}
    sdxl = jobs.wait_terminal(jobs.submit({"prompt": "x", "checkpoint": "sdxl.safetensors", "steps": 2, **SMALL})[0])
    assert worker_of(sdxl) != worker_of(first["sd15.safetensors"]), "the idle GPU that has waited longest"
    for n in range(4):
        for checkpoint, status in (("sd15.safetensors", first["sd15.safetensors"]), ("sdxl.safetensors", sdxl)):
            again = jobs.wait_terminal(jobs.submit({"prompt": f"{checkpoint} {n}", "checkpoint": checkpoint,
                                                    "steps": 2, **SMALL})[0])
            assert worker_of(again) == worker_of(status), "no model reload when a GPU with it loaded is idle"


def test_a_job_whose_only_capable_gpu_is_down_waits_and_says_so(jobs, core, start_simulator, start_worker):
    sims = [start_simulator(checkpoints="sd15.safetensors"), start_simulator(checkpoints="sdxl.safetensors")]
    workers = [start_worker(sim, gpu=gpu) for gpu, sim in enumerate(sims)]
    eventually(lambda: all(core.fleet.capabilities(worker.name) for worker in workers), timeout=10)
    sims[1].stop()  # its worker stops taking jobs; what its GPU offers stays known
    eventually(lambda: core.fleet.ready_count() == 1, timeout=30)
    job_id, _ = jobs.submit({"prompt": "needs sdxl", "checkpoint": "sdxl.safetensors", "steps": 2, **SMALL})
    status = jobs.status(job_id)
    assert status["state"] == "QUEUED" and status["queue"]["capable_workers"] == 0
    assert status["message"] == "Waiting for a GPU that has what this job needs (none online does)"
    sims[1].start()
    assert jobs.wait_terminal(job_id, 60)["state"] == "SUCCESS"
