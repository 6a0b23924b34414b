"""Operators watch jobs in Flower: name, arguments, state, runtime, GPU worker, and progress while running."""
from __future__ import annotations

import time

import requests

from app import client
from tests.services import FlowerProcess


def task_info(flower: FlowerProcess, job_id: str) -> dict | None:
    response = requests.get(f"{flower.url}/api/task/info/{job_id}", timeout=5)
    return response.json() if response.ok else None


def test_flower_shows_jobs_and_their_progress(flower, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim)
    time.sleep(2.0)  # Flower has subscribed to the worker's events
    job = client.submit(prompt="watched by an operator", width=64, height=64, steps=30)
    running = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running is None:
        info = task_info(flower, job.id)
        if info and info["state"] == "PROGRESS" and "Sampler step" in (info.get("result") or ""):
            running = info
        time.sleep(0.1)
    assert running is not None, "Flower never showed the job's progress"
    assert "%" in running["result"]
    assert job.wait(timeout=60)["state"] == "SUCCESS"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (task_info(flower, job.id) or {}).get("state") != "SUCCESS":
        time.sleep(0.2)
    info = task_info(flower, job.id)
    assert info["name"] == "text2img.generate" and info["state"] == "SUCCESS"
    assert "watched by an operator" in info["kwargs"]
    assert info["runtime"] > 0 and info["worker"] == worker.name
    listed = requests.get(f"{flower.url}/api/tasks", params={"taskname": "text2img.generate"}, timeout=5).json()
    assert job.id in listed


def flower_state(flower: FlowerProcess, job_id: str, state: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = task_info(flower, job_id) or {}
        if info.get("state") == state:
            return info
        time.sleep(0.2)
    raise AssertionError(f"Flower shows {task_info(flower, job_id)} for {job_id}, not {state}")


def test_flower_terminate_cancels_a_running_job_and_a_delete_shows_as_revoked(flower, start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim)
    time.sleep(2.0)
    by_operator = client.submit(prompt="terminated in Flower", width=64, height=64, steps=60)
    flower_state(flower, by_operator.id, "PROGRESS", timeout=30)
    answer = requests.post(f"{flower.url}/api/task/revoke/{by_operator.id}", data={"terminate": "true"}, timeout=5)
    assert answer.ok, answer.text
    assert by_operator.wait(timeout=30)["state"] == "CANCELLED"
    flower_state(flower, by_operator.id, "REVOKED")
    assert any(r["path"] == "/interrupt" and r.get("prompt_id") == by_operator.id for r in sim.requests_seen())
    by_user = client.submit(prompt="cancelled by its user", width=64, height=64, steps=60)
    flower_state(flower, by_user.id, "PROGRESS", timeout=30)
    assert by_user.cancel()["state"] == "CANCELLED"
    flower_state(flower, by_user.id, "REVOKED")
    assert "Traceback" not in worker.log()
