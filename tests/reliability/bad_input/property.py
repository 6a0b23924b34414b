"""The property every example is held to (a job, or a 4xx JSON error that queued nothing), and how many
examples each test runs."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, note, settings
from hypothesis.control import currently_in_test_context

from app.celery_app import Text2ImgCelery
from app.validation import MAX_SEED, RequestLimits

ACCEPTED = {"/api/jobs": 202, "/generate": 200}
GOOD = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3}
# The limits the examples are drawn near (strategies.py): the shipped ones, which the bench's web app keeps.
LIMITS = RequestLimits()


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings for a test that runs `examples` examples, the same ones on every run."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


class Bench:
    """A test client on a clean Redis, the Celery app (`core`) whose broker and job records show what it queued,
    and the checks every example makes."""

    def __init__(self, client: FlaskClient, core: Text2ImgCelery):
        self.client = client
        self.core = core
        self.redis: redis.Redis = core.redis
        self.seen: Counter[str] = Counter()

    def fresh(self) -> None:
        self.redis.flushall()

    def queued(self) -> tuple[int, int, list[str]]:
        records = self.core.records
        return self.redis.llen(self.core.conf.task_default_queue), self.core.dispatcher.length(), records.recent(10_000)

    def input_images(self) -> list[bytes]:
        return self.redis.keys("t2i:input:*")

    def submit(self, route: str, **kwargs: Any) -> tuple[str, Any]:
        """POST to a submission route; checks the property; returns ("accepted" | "rejected", response)."""
        before = self.queued()
        response = self.client.post(route, **kwargs)
        outcome = self.judge(route, response, before)
        self.seen[outcome] += 1
        return outcome, response

    def judge(self, route: str, response: Any, before: tuple[int, int, list[str]]) -> str:
        if currently_in_test_context():
            note(f"{route} -> {response.status_code} {response.get_data()[:300]!r}")
        assert response.status_code < 500, response.get_data()[:500]
        if response.status_code == ACCEPTED[route]:
            body = response.get_json()
            job_id = body["id"] if route == "/api/jobs" else body["prompt_id"]
            assert isinstance(job_id, str) and job_id
            if route == "/api/jobs":
                assert body["state"] == "QUEUED" and body["status_url"] == f"/api/jobs/{job_id}"
            else:
                assert body["status"] == "pending"
            assert isinstance(body["seed"], int) and 0 <= body["seed"] <= MAX_SEED
            llen, length, recent = self.queued()
            assert (llen, length, recent) == (before[0], before[1] + 1, [job_id] + before[2])  # taken into the index
            status = self.client.get(f"/api/jobs/{job_id}")
            assert status.status_code == 200 and status.get_json()["state"] == "QUEUED"
            assert status.get_json()["request"]["seed"] == body["seed"]
            if route == "/generate":
                assert self.client.get(f"/status/{job_id}").get_json()["status"] == "pending"
            return "accepted"
        json_error(response)
        assert self.queued() == before, "a rejected request queued something"
        return "rejected"

    def sanity(self, route: str = "/api/jobs") -> None:
        """The same client accepts a valid request (so the rejections above were about the input)."""
        self.fresh()
        outcome, _ = self.submit(route, json=GOOD)
        assert outcome == "accepted"


def json_error(response: Any, statuses: range | set[int] = range(400, 500)) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.get_data()[:500])
    assert response.mimetype == "application/json", response.get_data()[:500]
    body = json.loads(response.get_data())
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error
