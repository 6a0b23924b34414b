"""While a job's worker is lost, every reader says so: the web form, the JSON API, the simple API's /status and
the Python client show the `recovering` phase and its message; the job then resumes on a worker that comes up."""
from __future__ import annotations

import signal

import requests

from app.client import HttpClient
from tests.browser.test_page import assert_image_shown, submit, wait_running, wait_state

LOST = "stopped answering"


def test_a_lost_workers_job_shows_recovering_everywhere_then_resumes(start_simulator, start_worker, live_web, page,
                                                                     screenshot, reaper, python_client):
    sim = start_simulator(step_seconds=0.1)
    worker = start_worker(sim, gpu=0)
    page.goto(live_web.url + "/")
    job_id = submit(page, "its worker will be lost", steps=60)
    wait_running(page, 5)
    # The only GPU worker, not restarted: the standalone reaper (as in the Procfile) marks the job recovering.
    worker.signal(signal.SIGKILL)
    page.wait_for_function(f"document.getElementById('message').textContent.includes('{LOST}')", timeout=30_000)
    message = page.text_content("#message")
    assert worker.name in message and "resume" in message
    screenshot()
    api = requests.get(f"{live_web.url}/api/jobs/{job_id}", timeout=5).json()
    assert api["state"] == "PROGRESS" and api["phase"] == "recovering" and api["message"] == message
    assert api["lost_at"] <= api["updated_at"]
    simple = requests.get(f"{live_web.url}/status/{job_id}", timeout=5).json()
    assert simple["status"] == "running" and simple["message"] == message
    assert HttpClient(live_web.url).job(job_id).status()["phase"] == "recovering"
    assert python_client.job(job_id).status()["message"] == message

    start_worker(sim, gpu=1)
    wait_state(page, "SUCCESS", timeout=60)
    assert_image_shown(page, job_id)
