"""The job pipeline end to end: real Redis, GPU workers as processes, simulators over real sockets."""
from __future__ import annotations

import io
import threading
import time
import uuid

import pytest
from PIL import Image

from app.counters import EVENTS, LEASE_RECOVERED
from testkit.images import image_bytes, pixels
from testkit.jobs import Jobs, reference_pixels, template_graph
from testkit.metrics import fleet, value
from testkit.services import SimulatorProcess, WorkerProcess
from testkit.waiting import eventually
from workers.comfyui import ComfyUIClient

SMALL = {"width": 64, "height": 64}


def test_two_workers_run_twenty_jobs_each_image_its_own(jobs, start_simulator, start_gpus):
    sims = start_gpus(2)
    reference = start_simulator()
    fields = [{"prompt": f"picture number {n}", "steps": 4 + n % 3, **SMALL} for n in range(20)]
    job_ids = [jobs.submit(f)[0] for f in fields]
    watched: dict[str, list] = {job_id: [] for job_id in job_ids[:4]}
    pollers = [threading.Thread(target=jobs.wait_terminal, args=(job_id, 120, seen))
               for job_id, seen in watched.items()]
    for poller in pollers:
        poller.start()
    finals = [jobs.wait_terminal(job_id, 120) for job_id in job_ids]
    for poller in pollers:
        poller.join(120)

    assert [s["state"] for s in finals] == ["SUCCESS"] * 20
    assert {s["worker"].split("@")[0] for s in finals} == {"gpu0", "gpu1"}
    store = jobs.core.outputs
    for job_id, status, request in zip(job_ids, finals, fields):
        image = store.load(job_id, 0)
        assert pixels(image) == reference_pixels(reference, request, status["seed"]), job_id
        assert status["images"][0]["width"] == 64 and status["images"][0]["content_type"] == "image/png"
        served_by = [sim for sim in sims if sim.requests_about(job_id)]
        assert len(served_by) == 1, f"{job_id} talked to {len(served_by)} simulators"
        assert served_by[0].url == status["comfyui_url"]
        assert served_by[0].prompts_posted(job_id) == 1
    for job_id, seen in watched.items():
        overall = [s["progress"]["overall_percent"] for s in seen if "progress" in s]
        assert overall == sorted(overall), f"{job_id} went backwards: {overall}"
        assert overall[-1] == 100.0


def test_progress_reports_steps_node_and_eta(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "slow fox", "steps": 20, **SMALL})
    status = jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 5)
    assert status["phase"] == "running" and status["progress"]["max"] == 20
    assert status["node"] == {"id": "3", "class": "KSampler", "title": "Sampler"}
    assert status["eta_seconds"] is not None and 0.5 < status["eta_seconds"] < 5
    assert 0 < status["progress"]["overall_percent"] < 100
    assert status["worker"].startswith("gpu0@") and status["comfyui_url"] == sim.url
    assert jobs.wait_terminal(job_id)["state"] == "SUCCESS"


def test_queued_jobs_report_their_position(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.05)
    start_worker(sim)
    job_ids = [jobs.submit({"prompt": f"queued {n}", "steps": 20, **SMALL})[0] for n in range(4)]
    jobs.wait_for(job_ids[0], lambda s: s["state"] == "PROGRESS")
    waiting = [jobs.status(job_id) for job_id in job_ids[1:]]
    assert [s["queue"]["position"] for s in waiting] == [1, 2, 3]
    assert all(s["queue"]["workers_online"] == 1 and s["phase"] == "queued" for s in waiting)
    for job_id in job_ids:
        jobs.wait_terminal(job_id)


def test_unknown_job_is_not_a_queued_job(jobs):
    assert jobs.status("no-such-job") is None
    job_id, _ = jobs.submit({"prompt": "nobody runs me", **SMALL})
    assert jobs.status(job_id)["state"] == "QUEUED"
    assert jobs.status(job_id)["queue"] == {"position": 1, "workers_online": 0, "capable_workers": 0}


def test_comfyui_validation_error_fails_with_its_node_errors(jobs, start_simulator, start_worker):
    """A model deleted from the GPU after its worker published what it has: ComfyUI itself rejects the prompt."""
    sim = start_simulator(checkpoints="v1-5-pruned-emaonly.safetensors,missing-model.safetensors")
    worker = start_worker(sim)
    eventually(lambda: jobs.core.fleet.capabilities(worker.name), timeout=10)
    sim.set(checkpoints=["v1-5-pruned-emaonly.safetensors"])
    job_id, _ = jobs.submit({"prompt": "x", "checkpoint": "missing-model.safetensors", **SMALL})
    status = jobs.wait_terminal(job_id)
    assert status["state"] == "FAILURE"
    assert status["error"]["reason"].startswith("ComfyUI rejected the workflow: Prompt outputs failed validation")
    assert "node 4 (CheckpointLoaderSimple)" in status["error"]["reason"]
    assert "missing-model.safetensors" in status["error"]["reason"]


def test_execution_error_names_node_and_exception(jobs, start_simulator, start_worker):
    sim = start_simulator(fail_node="VAEDecode", fail_exception="torch.OutOfMemoryError: CUDA out of memory")
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "x", **SMALL})
    error = jobs.wait_terminal(job_id)["error"]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("8", "VAEDecode", "torch.OutOfMemoryError")
    assert "CUDA out of memory" in error["reason"] and error["comfyui_url"] == sim.url


def test_comfyui_failing_requests_is_retried_then_fails_naming_the_url(jobs, start_simulator, start_worker):
    sim = start_simulator(refuse_prompt=-1)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "x", **SMALL})
    status = jobs.wait_terminal(job_id, timeout=90)
    assert status["state"] == "FAILURE"
    assert status["error"]["reason"].startswith("ComfyUI unreachable")
    assert sim.url in status["error"]["reason"]
    assert len(sim.posts("/prompt")) == 2 * 5  # two deliveries (COMFYUI_RETRIES=1), five HTTP attempts each


def test_worker_stops_taking_jobs_while_its_comfyui_is_down(jobs, start_simulator, start_worker):
    sim = start_simulator()
    worker = start_worker(sim)
    sim.stop()
    eventually(lambda: "is down: not taking jobs" in worker.log())
    job_id, _ = jobs.submit({"prompt": "wait for me", **SMALL})
    time.sleep(2.0)  # the point: a worker taking jobs would have taken this one by now
    status = jobs.status(job_id)
    assert status["state"] == "QUEUED" and status["queue"]["workers_online"] == 0
    sim.start()
    assert jobs.wait_terminal(job_id, timeout=30)["state"] == "SUCCESS"


def test_time_limit_interrupts_the_prompt(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.2)
    start_worker(sim, JOB_TIME_LIMIT=1.5)
    job_id, _ = jobs.submit({"prompt": "too slow", "steps": 50, **SMALL})
    status = jobs.wait_terminal(job_id, timeout=30)
    assert status["state"] == "FAILURE" and status["error"]["reason"] == "timed out after 1.5 s on the GPU"
    history = sim.recorded_history(job_id)
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


def no_job_until_its_queue_empties(jobs: Jobs, sim: SimulatorProcess, stuck: str) -> None:
    """The worker of a ComfyUI that ignored an interrupt leaves a new job queued while the stuck prompt still runs,
    and runs it once that prompt has left ComfyUI's queue."""
    after, _ = jobs.submit({"prompt": "after it", "steps": 2, **SMALL})
    time.sleep(2.0)  # the point: long enough for the worker to have taken the job, were it taking jobs
    assert ComfyUIClient(sim.url).queue().running == (stuck,)  # still on the GPU
    assert jobs.status(after)["state"] == "QUEUED" and sim.prompts_posted(after) == 0
    assert jobs.wait_terminal(after, timeout=40)["state"] == "SUCCESS"
    assert sim.recorded_history(stuck) is not None, "the stuck prompt did finish first"


def test_a_comfyui_that_ignores_the_interrupt_fails_the_job_and_gets_no_job_until_its_queue_empties(
        jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1, ignore_interrupt=True)
    start_worker(sim, JOB_TIME_LIMIT=1, INTERRUPT_GRACE=1)
    stuck, _ = jobs.submit({"prompt": "never stops", "steps": 60, **SMALL})  # 6 s on the GPU, past the limit
    status = jobs.wait_terminal(stuck, timeout=30)
    assert status["state"] == "FAILURE", status
    assert status["error"]["reason"].startswith("ComfyUI did not stop the prompt within 1 s"), status["error"]
    no_job_until_its_queue_empties(jobs, sim, stuck)


def test_with_the_shipped_interrupt_grace_a_cancel_comfyui_ignores_stops_the_worker_taking_jobs(
        jobs, start_simulator, start_worker):
    """INTERRUPT_GRACE as shipped (30 s): the cancel is final at once; 30 s later the worker gives up on its
    ComfyUI and takes no job until the ignored prompt has left ComfyUI's queue."""
    sim = start_simulator(step_seconds=0.3, ignore_interrupt=True)
    worker = start_worker(sim, WORKER_HEARTBEAT=5)  # the shipped health interval: it notices the empty queue
    stuck, _ = jobs.submit({"prompt": "runs on whatever we say", "steps": 150, **SMALL})  # 45 s on the GPU
    jobs.wait_for(stuck, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 1)
    asked = time.monotonic()
    assert jobs.cancel(stuck)["state"] == "CANCELLED"
    eventually(lambda: "did not stop the prompt within 30 s" in worker.log(), timeout=40)
    assert time.monotonic() - asked > 29  # not before the grace ran out
    no_job_until_its_queue_empties(jobs, sim, stuck)
    assert jobs.status(stuck)["state"] == "CANCELLED"


def test_a_prompt_waiting_too_long_in_comfyuis_queue_is_deleted_and_fails(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    start_worker(sim, QUEUE_WAIT_LIMIT=1.5)
    other = ComfyUIClient(sim.url).submit(template_graph({"prompt": "another client's", "steps": 60, **SMALL},
                                                         "other")).prompt_id
    job_id, _ = jobs.submit({"prompt": "waits behind it", "steps": 2, **SMALL})
    status = jobs.wait_terminal(job_id, timeout=30)
    assert status["state"] == "FAILURE"
    assert status["error"]["reason"] == "waited more than 1.5 s in ComfyUI's queue without starting"
    queue = ComfyUIClient(sim.url).queue()
    assert queue.running == (other,) and job_id not in queue.pending
    assert ComfyUIClient(sim.url).prompt_state(job_id).status == "unknown"  # deleted, never run


def dropped(worker: WorkerProcess, job_id: str) -> bool:
    """The worker got the job's message and let it go: a revoked job is discarded, a job that ended steps aside."""
    log = worker.log()
    return (f"Discarding revoked task: text2img.generate[{job_id}]" in log
            or f"Task text2img.generate[{job_id}] ignored" in log)


def test_cancel_queued_job_never_reaches_comfyui(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.05)
    worker = start_worker(sim)
    running, _ = jobs.submit({"prompt": "first", "steps": 30, **SMALL})
    queued, _ = jobs.submit({"prompt": "second", **SMALL})
    jobs.wait_for(running, lambda s: s["state"] == "PROGRESS")
    assert jobs.cancel(queued)["state"] == "CANCELLED"
    assert jobs.wait_terminal(running)["state"] == "SUCCESS"
    # Out of the index at once; or, had it already been handed to the worker (its pipelining slot), dropped there.
    assert jobs.core.dispatcher.length() == 0
    eventually(lambda: not jobs.core.dispatcher.assigned(worker.name))
    assert jobs.core.records.job(queued).get("handed_to") is None or dropped(worker, queued)
    assert jobs.status(queued)["state"] == "CANCELLED"
    assert sim.requests_about(queued) == []


def test_cancel_running_job_interrupts_only_its_prompt(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "stop me", "steps": 100, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 2)
    asked = time.monotonic()
    assert jobs.cancel(job_id)["state"] == "CANCELLED"
    assert jobs.meta(job_id)["status"] == "REVOKED"  # the cancel's answer is the stored terminal state
    seen: list = []

    def stopped() -> dict | None:
        """The prompt's history, once ComfyUI has one; until then, the job's status each time."""
        history = sim.recorded_history(job_id)
        if history is None:
            seen.append(jobs.status(job_id))
        return history

    history = eventually(stopped, timeout=10)
    assert time.monotonic() - asked < 2.0  # the worker stopped the prompt within 2 s
    assert seen and all(s["state"] == "CANCELLED" for s in seen)
    assert history["status"]["messages"][-1][0] == "execution_interrupted"
    later, _ = jobs.submit({"prompt": "after", **SMALL})
    assert jobs.wait_terminal(later)["state"] == "SUCCESS"


def test_websocket_drops_do_not_lose_the_result(jobs, start_simulator, start_worker):
    sim = start_simulator(drop_ws_after=15)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "flaky network", "steps": 30, **SMALL})
    status = jobs.wait_terminal(job_id)
    assert status["state"] == "SUCCESS" and len(status["images"]) == 1
    assert sum(1 for r in sim.requests_about(job_id) if r["method"] == "WS") > 1


def test_history_written_late_still_gives_the_images(jobs, start_simulator, start_worker):
    sim = start_simulator(history_delay=2.0)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "slow history", "batch_size": 2, **SMALL})
    status = jobs.wait_terminal(job_id)
    assert status["state"] == "SUCCESS" and [i["index"] for i in status["images"]] == [0, 1]
    assert all(jobs.core.outputs.load(job_id, i) for i in (0, 1))


@pytest.mark.parametrize("steps", [3])
def test_img2img_uses_the_uploaded_image(jobs, start_simulator, start_worker, steps):
    sim = start_simulator()
    start_worker(sim)
    source = image_bytes((100, 80), (0, 200, 0))
    job_id, request = jobs.submit({"prompt": "make it blue", "steps": steps, "strength": 0.3, **SMALL},
                                  input_image=source)
    assert request.name == "img2img"
    status = jobs.wait_terminal(job_id)
    assert status["state"] == "SUCCESS"
    image = Image.open(io.BytesIO(jobs.core.outputs.load(job_id, 0))).convert("RGB")
    assert image.size == (64, 64)
    red, green, blue = image.resize((1, 1)).getpixel((0, 0))
    assert green > red and green > blue  # 70 % of the green source survives strength 0.3
    # The job's input image was uploaded once, before its prompt, and its prompt loads that very file.
    uploads = sim.posts("/upload/image")
    assert len(uploads) == 1 and uploads[0]["t"] < sim.posts("/prompt", job_id)[0]["t"]
    graph = sim.recorded_history(job_id)["prompt"][2]
    loaded = [node["inputs"]["image"] for node in graph.values() if node["class_type"] == "LoadImage"]
    assert len(loaded) == 1 and pixels((sim.data_dir / "input" / loaded[0]).read_bytes()) == pixels(source)


def test_latest_preview_frame_is_kept_briefly(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1, previews=True)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "preview me", "steps": 30, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 3)
    content_type, data = jobs.core.previews.latest(job_id)
    assert content_type == "image/jpeg" and data[:2] == b"\xff\xd8"
    assert 0 < jobs.core.redis.ttl(f"t2i:preview:{job_id}") <= 60
    jobs.wait_terminal(job_id)


def test_redelivered_copy_of_a_running_job_steps_aside_and_leaves_one_result(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    other_gpu = start_simulator(step_seconds=0.01)
    short = {"VISIBILITY_TIMEOUT": 2}
    first = start_worker(sim, gpu=0, **short)
    job_id, _ = jobs.submit({"prompt": "long job", "steps": 150, **SMALL})
    jobs.wait_for(job_id, lambda s: s["state"] == "PROGRESS")
    second = start_worker(other_gpu, gpu=1, **short)
    eventually(lambda: "steps aside" in second.log() or "steps aside" in first.log(), timeout=20)
    # The copy did not keep the other GPU's only slot: a new job runs there while the long one still runs.
    other, _ = jobs.submit({"prompt": "meanwhile", "steps": 2, **SMALL})
    assert jobs.wait_terminal(other, timeout=20)["worker"].startswith("gpu1@")
    assert jobs.status(job_id)["state"] == "PROGRESS"
    status = jobs.wait_terminal(job_id, timeout=60)
    assert status["state"] == "SUCCESS" and status["worker"].startswith("gpu0@")
    assert sim.prompts_posted(job_id) == 1 and other_gpu.prompts_posted(job_id) == 0
    # SUCCESS is stored before the task returns and Celery logs it; the copy has already stepped aside
    eventually(lambda: f"Task text2img.generate[{job_id}] succeeded" in first.log() + second.log())
    logs = first.log() + second.log()
    assert logs.count(f"Task text2img.generate[{job_id}] succeeded") == 1
    assert jobs.meta(job_id)["status"] == "SUCCESS"


def test_jobs_start_after_redis_has_lost_its_scripts(jobs, start_simulator, start_worker):
    """A worker's start calls its scripts by SHA (workers/start.py): after Redis forgets them (a restart, a
    failover, SCRIPT FLUSH), the next start loads them and runs."""
    start_worker(start_simulator(step_seconds=0.01))
    first, _ = jobs.submit({"prompt": "before the flush", "steps": 1, **SMALL})
    assert jobs.wait_terminal(first, 30)["state"] == "SUCCESS"
    jobs.core.redis.script_flush()
    second, _ = jobs.submit({"prompt": "after the flush", "steps": 1, **SMALL})
    final = jobs.wait_terminal(second, 30)
    assert final["state"] == "SUCCESS"
    record = jobs.core.records.job(second)
    assert record["worker"] == final["worker"] and record["started_at"] >= record["created_at"]


def test_a_write_sent_ahead_is_made_after_redis_has_lost_its_scripts(jobs):
    """The `saving` phase's write is sent before the download and answered after it (write_later): on NOSCRIPT it
    is made again, the script loaded. Its connection goes back to the pool either way."""
    backend = jobs.core.backend
    pool = backend.client.connection_pool
    held = set(pool._in_use_connections)  # a result listener of this process may hold one
    job_id = str(uuid.uuid4())
    assert backend.write_later(job_id, "PROGRESS", {"phase": "before"})() == "written"
    jobs.core.redis.script_flush()
    answer = backend.write_later(job_id, "PROGRESS", {"phase": "saving"})
    assert answer() == "written"
    assert jobs.meta(job_id)["result"]["phase"] == "saving"
    assert set(pool._in_use_connections) <= held


def test_a_job_is_submitted_under_a_socket_opened_before_it_arrived(jobs, start_simulator, start_worker):
    """After its first job, a worker keeps a websocket open for the next one (a spare, workers/comfyui/spare.py):
    the next prompt's dispatch does not wait for a handshake. Each job's client id is its own, recorded for an
    execution that resumes it."""
    sim = start_simulator(step_seconds=0.01)
    start_worker(sim)
    ids = []
    for n in range(3):
        job_id, _ = jobs.submit({"prompt": f"job {n}", "steps": 1, **SMALL})
        assert jobs.wait_terminal(job_id, 30)["state"] == "SUCCESS"
        ids.append(job_id)
    connected = {r["client_id"]: r["t"] for r in sim.requests_seen() if r.get("path") == "/ws"}
    clients = []
    for job_id in ids:
        [post] = sim.posts("/prompt", job_id)
        record = jobs.core.records.job(job_id)
        assert record["comfyui_client_id"] == post["client_id"] != job_id
        clients.append(post["client_id"])
        if job_id != ids[0]:
            assert connected[post["client_id"]] < record["created_at"], "its socket was open before the job existed"
    assert len(set(clients)) == 3


def test_a_job_longer_than_its_lease_keeps_it_at_the_shipped_defaults(jobs, start_simulator, start_worker):
    """LEASE_TTL and REAPER_INTERVAL as shipped (10 s, 2 s): a healthy 13.5 s job, taken while the worker's
    refresher thread had nothing to refresh (it is not woken: it looks again within a second, before the lease is
    due), is never handed back."""
    sim = start_simulator(step_seconds=0.3)
    start_worker(sim)
    job_id, _ = jobs.submit({"prompt": "longer than its lease", "steps": 45, **SMALL})
    assert jobs.wait_terminal(job_id, 60)["state"] == "SUCCESS"
    assert sim.prompts_posted(job_id) == 1
    assert value(fleet(jobs.core), "t2i_lease_recoveries_total") == 0


def test_two_jobs_on_one_worker_keep_their_leases_through_many_refreshes(jobs, start_simulator, start_worker):
    """The worker's one refresher thread keeps every lease it holds alive (app/leases.py): two pipelined jobs
    each outlive their lease's time to live several times over and are never handed back."""
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim, LEASE_TTL="1", PIPELINE_LOOKAHEAD="1")
    first, _ = jobs.submit({"prompt": "long", "steps": 30, **SMALL})
    second, _ = jobs.submit({"prompt": "long, after it", "steps": 30, **SMALL})
    assert jobs.wait_terminal(first, 30)["state"] == "SUCCESS"
    assert jobs.wait_terminal(second, 30)["state"] == "SUCCESS"
    assert sim.prompts_posted(first) == 1 and sim.prompts_posted(second) == 1
    assert "lost its lease" not in worker.log() and jobs.core.redis.hget(EVENTS, LEASE_RECOVERED) is None
