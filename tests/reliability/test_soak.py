"""A small soak in CI (the full 500-job one is `python -m tests.reliability.soak`)."""
from __future__ import annotations

from typing import Iterator

import pytest

from app.celery_app import create_celery
from testkit.jobs import Jobs
from tests.reliability.soak import job_keys, run_soak, wait_for_baseline
from tests.reliability.tally import record

EXPIRES = 8


@pytest.fixture
def short_expiry_jobs(settings, clean_redis) -> Iterator[Jobs]:
    """This process writes job records too: they must expire as fast as the workers' results."""
    core = create_celery(settings.replace(result_expires=EXPIRES))
    yield Jobs(core)
    core.close()


def test_soak_every_job_ends_once_and_redis_returns_to_baseline(start_gpus, clean_redis, short_expiry_jobs):
    simulators = start_gpus(4, {"RESULT_EXPIRES": EXPIRES, "PREVIEW_TTL": 3}, step_seconds=0.01, previews=True)
    baseline = job_keys(clean_redis)
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
