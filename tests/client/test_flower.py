"""Operators watch jobs in Flower: name, arguments, state, runtime, GPU worker, and progress while running."""
from __future__ import annotations

from typing import Callable

import requests

from testkit.services import FlowerProcess
from testkit.waiting import eventually


def task_info(flower: FlowerProcess, job_id: str) -> dict | None:
    response = requests.get(f"{flower.url}/api/task/info/{job_id}", timeout=5)
    return response.json() if response.ok else None


def flower_shows(flower: FlowerProcess, job_id: str, wanted: Callable[[dict], bool], timeout: float) -> dict:
    """What Flower shows of the job, once it is what is wanted."""
    def shown() -> dict | None:
        info = task_info(flower, job_id) or {}
        return info if wanted(info) else None
    return eventually(shown, timeout, lambda: f"Flower shows {task_info(flower, job_id)} for {job_id}", interval=0.1)


def flower_state(flower: FlowerProcess, job_id: str, state: str, timeout: float = 15.0) -> dict:
    return flower_shows(flower, job_id, lambda info: info.get("state") == state, timeout)


def test_flower_shows_jobs_and_their_progress(flower, python_client, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim)
    eventually(lambda: flower.follows(worker.name))
    job = python_client.submit(prompt="watched by an operator", width=64, height=64, steps=30)
    running = flower_shows(flower, job.id, lambda info: info.get("state") == "PROGRESS"
                           and "Sampler step" in (info.get("result") or ""), timeout=30)
    assert "%" in running["result"]
    assert job.wait(timeout=60)["state"] == "SUCCESS"
    info = flower_state(flower, job.id, "SUCCESS", timeout=10)
    assert info["name"] == "text2img.generate"
    assert "watched by an operator" in info["kwargs"]
    assert info["runtime"] > 0 and info["worker"] == worker.name
    listed = requests.get(f"{flower.url}/api/tasks", params={"taskname": "text2img.generate"}, timeout=5).json()
    assert job.id in listed


def test_flower_terminate_cancels_a_running_job_and_a_delete_shows_as_revoked(flower, python_client, start_simulator,
                                                                              start_worker):
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim)
    eventually(lambda: flower.follows(worker.name))
    by_operator = python_client.submit(prompt="terminated in Flower", width=64, height=64, steps=60)
    flower_state(flower, by_operator.id, "PROGRESS", timeout=30)
    answer = requests.post(f"{flower.url}/api/task/revoke/{by_operator.id}", data={"terminate": "true"}, timeout=5)
    assert answer.ok, answer.text
    assert by_operator.wait(timeout=30)["state"] == "CANCELLED"
    flower_state(flower, by_operator.id, "REVOKED")
    assert sim.posts("/interrupt", by_operator.id)
    by_user = python_client.submit(prompt="cancelled by its user", width=64, height=64, steps=60)
    flower_state(flower, by_user.id, "PROGRESS", timeout=30)
    assert by_user.cancel()["state"] == "CANCELLED"
    flower_state(flower, by_user.id, "REVOKED")
    assert "Traceback" not in worker.log()
