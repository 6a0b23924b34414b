"""A small soak in CI (the full 500-job one is `python -m tests.reliability.soak`)."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from app.celery_app import create_celery
from testkit.jobs import Jobs
from testkit.metrics import scrape, value
from testkit.processes import free_port
from tests.reliability.soak import job_keys, run_soak, wait_for_baseline
from tests.reliability.tally import record

EXPIRES = 8


@pytest.fixture
def short_expiry_jobs(settings, clean_redis) -> Iterator[Jobs]:
    """This process writes job records too: they must expire as fast as the workers' results."""
    core = create_celery(settings.replace(result_expires=EXPIRES))
    yield Jobs(core)
    core.close()


def test_soak_every_job_ends_once_and_redis_returns_to_baseline(start_simulator, start_worker, clean_redis,
                                                                short_expiry_jobs, live_web):
    simulators = [start_simulator(step_seconds=0.01, previews=True) for _ in range(4)]
    ports = [free_port() for _ in simulators]
    for gpu, (sim, port) in enumerate(zip(simulators, ports)):
        start_worker(sim, gpu=gpu, RESULT_EXPIRES=EXPIRES, PREVIEW_TTL=3, METRICS_PORT=port)
    baseline = job_keys(clean_redis)
    with Scraper(live_web.url + "/metrics") as during:
        summary = run_soak(short_expiry_jobs, 60, simulators, seed=7)
    row = record("soak: 60 jobs, 4 workers, random faults", summary["finals"], summary["prompts"],
                 summary["seconds"], runs=1)
    assert summary["lost"] == [] and summary["duplicated"] == []
    assert row.lost == 0 and summary["states"].get("SUCCESS", 0) > 30
    assert set(summary["states"]) <= {"SUCCESS", "FAILURE", "CANCELLED"}
    for job_id, status in summary["finals"].items():
        if status["state"] == "FAILURE":
            assert status["error"]["node_type"] in ("VAEDecode", "KSampler"), status["error"]
    assert wait_for_baseline(clean_redis, baseline, EXPIRES + 20) == set()

    # /metrics, scraped all along, counted exactly the jobs that ran: each end once, never a count going back.
    assert during.scrapes >= 3 and during.went_back == []
    ended = scrape(live_web.url + "/metrics")
    assert {state: value(ended, "t2i_jobs_ended_total", state=state, template="txt2img")
            for state in summary["states"]} == summary["states"]
    assert value(ended, "t2i_jobs_ended_total") == 60
    assert value(ended, "t2i_queue_depth") == 0 and value(ended, "t2i_jobs_running") == 0
    gpus = [scrape(f"http://127.0.0.1:{port}/metrics") for port in ports]
    assert sum(value(gpu, "t2i_job_completion_seconds_count") for gpu in gpus) == summary["states"]["SUCCESS"]
    assert sum(value(gpu, "t2i_comfyui_errors_total", kind="execution_error") for gpu in gpus) >= summary[
        "states"].get("FAILURE", 0)
    assert all(value(gpu, "t2i_gpu_busy_seconds_total") > 0 for gpu in gpus)


class Scraper:
    """Scrapes a /metrics URL twice a second in a thread, and notes any counter that went back."""

    def __init__(self, url: str):
        self.url = url
        self.scrapes = 0
        self.went_back: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "Scraper":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(10)

    def run(self) -> None:
        last: dict = {}
        while not self.stopped.wait(0.5):
            samples = scrape(self.url)
            self.scrapes += 1
            for key, count in samples.items():
                if key[0].endswith("_total") and count < last.get(key, 0):
                    self.went_back.append(f"{key}: {last[key]} -> {count}")
            last = samples
