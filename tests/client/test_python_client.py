"""The Python client (shared Redis and HTTP), the raw Celery way, and the CLI, against the real stack."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from celery.exceptions import TaskRevokedError

from app.celery_app import TASK_NAME
from app.client import HttpClient, JobError
from app.request import RequestError
from app.settings import Settings
from testkit.images import image_bytes, image_size
from testkit.processes import child_environment

SMALL = {"width": 64, "height": 64, "steps": 4}

@pytest.fixture
def stack(start_simulator, start_worker):
    sim = start_simulator(step_seconds=0.05)
    worker = start_worker(sim)
    return sim, worker


def test_submit_wait_with_progress_and_images(stack, python_client):
    job = python_client.submit(prompt="a red fox", batch_size=2, width=64, height=64, steps=20)
    seen: list[dict] = []
    final = job.wait(timeout=60, on_progress=seen.append)
    assert final["state"] == "SUCCESS" and seen[-1]["state"] == "SUCCESS"
    assert any(s["state"] == "PROGRESS" for s in seen)
    assert [image_size(data) for data in job.images()] == [(64, 64), (64, 64)]
    assert job.status()["seed"] == final["seed"]


def test_bad_request_and_unknown_job(python_client, clean_redis):
    with pytest.raises(RequestError) as caught:
        python_client.submit(prompt="", steps=0)
    assert {e["field"] for e in caught.value.errors} == {"prompt", "steps"}
    with pytest.raises(JobError):
        python_client.job("no-such-job").status()


def test_cancel_and_images_of_a_cancelled_job(stack, python_client):
    job = python_client.submit(prompt="never mind", width=64, height=64, steps=100)
    job.wait(timeout=30, on_progress=lambda s: s["state"] == "PROGRESS" and job.cancel())
    assert job.status()["state"] == "CANCELLED"
    with pytest.raises(JobError) as caught:
        job.images()
    assert "CANCELLED" in str(caught.value)


def test_wait_times_out(python_client, clean_redis):
    job = python_client.submit(prompt="nobody is running", **SMALL)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.3)


def test_raw_send_task_by_name(stack, core, python_client):
    result = core.send_task(TASK_NAME, kwargs={"prompt": "raw", "seed": 3, **SMALL})
    value = result.get(timeout=60)
    assert value["seed"] == 3 and value["images"][0]["width"] == 64
    assert python_client.job(result.id).status()["state"] == "SUCCESS"
    doomed = core.send_task(TASK_NAME, kwargs={"prompt": "raw", "steps": 100, "width": 64, "height": 64})
    doomed_job = python_client.job(doomed.id)
    doomed_job.wait(timeout=30, on_progress=lambda s: s["state"] == "PROGRESS" and doomed_job.cancel())
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=30)


def test_raw_send_task_with_a_bad_request_fails_before_a_gpu(stack, core):
    sim, _ = stack
    result = core.send_task(TASK_NAME, kwargs={"prompt": "x", "steps": "lots"})
    with pytest.raises(Exception) as caught:
        result.get(timeout=30)
    assert "steps: must be an integer" in str(caught.value)
    assert [r for r in sim.requests_seen() if r["method"] == "POST"] == []


def test_http_client_through_the_web_tier(stack, live_web):
    http = HttpClient(live_web.url)
    job = http.submit(prompt="over http", **SMALL)
    assert job.wait(timeout=60)["state"] == "SUCCESS"
    assert image_size(job.images()[0]) == (64, 64)
    img2img = http.submit(input_image=image_bytes((80, 80), (200, 0, 0)), prompt="redder", **SMALL)
    assert img2img.wait(timeout=60)["state"] == "SUCCESS"
    with pytest.raises(JobError) as caught:
        http.submit(prompt="x", width=7)
    assert "width: must be between 64 and 4096" in str(caught.value)


def cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m app ...` with these settings."""
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=child_environment(settings.to_env()))


def test_cli_generate_status_cancel_workers(stack, settings, tmp_path):
    sim, worker = stack
    done = cli(settings, "generate", "a red fox", "--steps", "5", "--width", "64", "--height", "64", "--out",
               str(tmp_path / "fox.png"), "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert image_size((tmp_path / "fox.png").read_bytes()) == (64, 64)
    assert "100.0%" in done.stderr and f"saved {tmp_path / 'fox.png'}" in done.stderr
    status = cli(settings, "status", job_id, cwd=tmp_path)
    assert '"state": "SUCCESS"' in status.stdout
    queued = cli(settings, "generate", "slow", "--steps", "150", "--width", "64", "--height", "64",
                 cwd=tmp_path).stdout.strip()
    cancelled = cli(settings, "cancel", queued, cwd=tmp_path)
    assert '"state": "CANCELLED"' in cancelled.stdout
    workers = cli(settings, "workers", cwd=tmp_path).stdout
    assert worker.name in workers and sim.url in workers and "ready" in workers
    bad = cli(settings, "generate", "", cwd=tmp_path)
    assert bad.returncode == 2 and "prompt: is required" in bad.stderr


def test_a_job_is_recorded_once_whichever_way_it_is_sent(python_client, clean_redis, monkeypatch):
    records = python_client.app.records
    looked_up: list[str] = []
    real_job = records.job
    monkeypatch.setattr(records, "job", lambda job_id: looked_up.append(job_id) or real_job(job_id))
    submitted = python_client.submit(prompt="recorded by submit", **SMALL)
    raw = python_client.app.send_task(TASK_NAME, kwargs={"prompt": "raw", **SMALL})  # recorded when taken in
    assert looked_up == []  # neither costs a lookup of the whole record
    assert records.recent() == [raw.id, submitted.id]
    assert [python_client.job(job_id).status()["queue"]["position"] for job_id in (submitted.id, raw.id)] == [1, 2]


def test_a_plain_celery_program_sends_by_name_as_the_readme_shows(stack, redis_server):
    """A program that does not import this project: plain Celery, the README's snippet, queue named."""
    from celery import Celery
    plain = Celery(broker=redis_server.url, backend=redis_server.url)
    request = {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": 42}
    by_kwargs = plain.send_task("text2img.generate", kwargs=request, queue="text2img")
    by_args = plain.send_task("text2img.generate", args=[request], queue="text2img")
    for result in (by_kwargs, by_args):
        done = result.get(timeout=60)
        assert done["seed"] == 42 and done["images"][0]["url"].endswith("/images/0")


def test_submit_many_queues_in_order_and_every_job_runs(stack, python_client):
    sim, _ = stack
    jobs = python_client.submit_many([{"prompt": f"fox {n}", "seed": n, **SMALL} for n in range(4)])
    for n, job in enumerate(jobs):
        final = job.wait(timeout=60)
        assert final["state"] == "SUCCESS" and final["seed"] == n
        assert image_size(job.images()[0]) == (64, 64)
    assert [r["prompt_id"] for r in sim.posts("/prompt")] == [job.id for job in jobs]


def test_submit_many_is_all_or_nothing(python_client, clean_redis):
    with pytest.raises(RequestError) as caught:
        python_client.submit_many([{"prompt": "fine", **SMALL}, {"prompt": "x", "steps": 0}, {"prompt": ""}])
    assert [e["field"] for e in caught.value.errors] == ["requests[1].steps", "requests[2].prompt"]
    assert python_client.app.dispatcher.length() == 0 and python_client.app.records.recent() == []
    queued = python_client.submit_many([{"prompt": f"p{n}", **SMALL} for n in range(3)])
    assert [job.status()["queue"]["position"] for job in queued] == [1, 2, 3]
    again = python_client.submit_many([{"prompt": "once", **SMALL}] * 2, idempotency_key="k")
    assert [job.id for job in python_client.submit_many([{"prompt": "once", **SMALL}] * 2, idempotency_key="k")] == \
        [job.id for job in again]


def test_http_client_submit_many(stack, live_web):
    http = HttpClient(live_web.url)
    jobs = http.submit_many([{"prompt": f"over http {n}", **SMALL} for n in range(2)])
    assert [job.wait(timeout=60)["state"] for job in jobs] == ["SUCCESS", "SUCCESS"]
    with pytest.raises(JobError) as caught:
        http.submit_many([{"prompt": "x", **SMALL}, {"prompt": "x", "width": 7}])
    assert "requests[1].width: must be between 64 and 4096" in str(caught.value)
