"""After a job ends, its worker cleans ComfyUI up (workers/cleanup.py): the job's history entry is deleted, and with
COMFYUI_DIR its uploaded input and its output files too, so a day of jobs fills neither the GPU host's disk nor
ComfyUI's in-memory history."""
from __future__ import annotations

import signal
from pathlib import Path

from testkit.images import image_bytes
from testkit.waiting import eventually
from workers.comfyui import ComfyUIClient

SMALL = {"width": 64, "height": 64, "steps": 2}


def files_of(folder: Path, job_id: str) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if job_id in path.name)


def test_history_and_files_of_ended_jobs_are_gone(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.01)
    start_worker(sim, COMFYUI_DIR=str(sim.data_dir))
    done = jobs.submit({"prompt": "kept only in our store", "batch_size": 2, **SMALL})[0]
    changed = jobs.submit({"prompt": "from an upload", **SMALL}, input_image=image_bytes())[0]
    for job_id in (done, changed):
        assert jobs.wait_terminal(job_id)["state"] == "SUCCESS"
        assert len(jobs.core.outputs.load(job_id, 0)) > 0, "the images are in our own store"
    sim.set(fail_node="VAEDecode")
    failed = jobs.submit({"prompt": "fails", **SMALL})[0]
    assert jobs.wait_terminal(failed)["state"] == "FAILURE"
    comfyui = ComfyUIClient(sim.url)
    for job_id in (done, changed, failed):
        eventually(lambda: comfyui.history(job_id) is None, timeout=10)
        assert sim.posts("/prompt", job_id), "it did run there"
    for folder in ("input", "output", "temp"):
        for job_id in (done, changed, failed):
            assert files_of(sim.data_dir / folder, job_id) == [], (folder, job_id)


def test_without_comfyui_dir_only_the_history_entry_goes(jobs, start_simulator, start_worker):
    """ComfyUI has no route that deletes a file: a worker that cannot reach its folders leaves them."""
    sim = start_simulator(step_seconds=0.01)
    start_worker(sim)
    job_id = jobs.submit({"prompt": "files stay", **SMALL})[0]
    assert jobs.wait_terminal(job_id)["state"] == "SUCCESS"
    eventually(lambda: ComfyUIClient(sim.url).history(job_id) is None, timeout=10)
    assert len(files_of(sim.data_dir / "output", job_id)) == 1


def test_a_history_entry_comfyui_writes_after_the_jobs_end_is_deleted_too(jobs, start_simulator, start_worker):
    """ComfyUI sends a prompt's last message before it writes the prompt's history entry (main.py's prompt_worker:
    execute, then task_done); a real server was recorded taking 0.33 s between the two. A delete in that window
    deletes nothing, and the entry would stay for good."""
    sim = start_simulator(step_seconds=0.01, history_delay=1.0)
    start_worker(sim)
    succeeded = jobs.submit({"prompt": "history written late", **SMALL})[0]
    assert jobs.wait_terminal(succeeded)["state"] == "SUCCESS"
    sim.set(fail_node="VAEDecode")
    failed = jobs.submit({"prompt": "fails, history written late", **SMALL})[0]
    assert jobs.wait_terminal(failed)["state"] == "FAILURE"
    comfyui = ComfyUIClient(sim.url)
    for job_id in (succeeded, failed):
        eventually(lambda: sim.recorded_history(job_id) is not None, timeout=10)
        eventually(lambda: comfyui.history(job_id) is None, timeout=10)


def test_jobs_that_end_close_together_are_cleaned_up_in_one_request(jobs, start_simulator, start_worker):
    """A worker cleans up a moment after a job's end, every job that ended meanwhile at once: one POST /history
    deletes them all."""
    sim = start_simulator(step_seconds=0.01)
    start_worker(sim)
    ids = [jobs.submit({"prompt": f"batch {n}", **SMALL})[0] for n in range(4)]
    for job_id in ids:
        assert jobs.wait_terminal(job_id)["state"] == "SUCCESS"
    comfyui = ComfyUIClient(sim.url)
    for job_id in ids:
        eventually(lambda: comfyui.history(job_id) is None, timeout=10)
    deletes = [post["delete"] for post in sim.posts("/history")]
    assert sorted(job_id for delete in deletes for job_id in delete) == sorted(ids)
    assert len(deletes) < len(ids), deletes


def test_a_worker_that_stops_as_a_job_ends_cleans_up_before_it_exits(jobs, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.01)
    worker = start_worker(sim, COMFYUI_DIR=str(sim.data_dir))
    job_id = jobs.submit({"prompt": "the last job before a stop", **SMALL})[0]
    assert jobs.wait_terminal(job_id)["state"] == "SUCCESS"
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0
    assert ComfyUIClient(sim.url).history(job_id) is None
    assert files_of(sim.data_dir / "output", job_id) == []
