"""Webhooks with a real receiver (a small HTTP server in the test): signed, at least once from the outbox, retried,
dead-lettered and replayed, and delivered even when the worker sending it dies."""
from __future__ import annotations

import json
import re
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from testkit.metrics import fleet, value
from testkit.waiting import eventually

SECRET = "whsec-test"
SMALL = {"width": 64, "height": 64, "steps": 2}
WEBHOOKS = {"WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE": "1"}
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verifier():
    """The receiver's check exactly as the README shows it."""
    code = re.search(r"```python\n(# A webhook receiver's check.*?)```", README.read_text(), re.S).group(1)
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["verified"]


class Receiver:
    """Answers `fail` times with 500 (or not at all while `down`), then 200; records every request."""

    def __init__(self, fail: int = 0, hang: float = 0.0):
        self.fail, self.hang = fail, hang
        self.seen: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.seen.append({"headers": dict(self.headers), "body": body})
                if receiver.hang:
                    threading.Event().wait(receiver.hang)
                answer = 500 if receiver.fail > 0 else 200
                receiver.fail -= 1
                self.send_response(answer)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**options: Any) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]
    yield make
    for one in made:
        one.close()


def test_fails_three_times_then_one_signed_delivery_with_one_id(jobs, make_app, receiver, start_simulator,
                                                                start_worker):
    hook = receiver(fail=3)
    start_worker(start_simulator(step_seconds=0.01), **WEBHOOKS)
    client = make_app(webhook_secret=SECRET, webhook_allow_private=True).test_client()
    made = client.post("/api/jobs", json={"prompt": "tell me", "webhook_url": hook.url, **SMALL})
    assert made.status_code == 202
    eventually(lambda: len(hook.seen) == 4, timeout=60)
    ids = {request["headers"]["X-Webhook-Id"] for request in hook.seen}
    assert len(ids) == 1, "the same delivery id on every attempt"
    last = hook.seen[-1]
    status = json.loads(last["body"])
    assert status["id"] == made.json["id"] and status["state"] == "SUCCESS" and status["images"]
    verified = readme_verifier()
    headers = last["headers"]
    assert verified(SECRET, headers["X-Webhook-Timestamp"], headers["X-Webhook-Signature"], last["body"])
    assert not verified(SECRET, headers["X-Webhook-Timestamp"], headers["X-Webhook-Signature"], last["body"] + b" ")
    assert not verified("another secret", headers["X-Webhook-Timestamp"], headers["X-Webhook-Signature"],
                        last["body"])
    threading.Event().wait(3)  # nothing more comes: it was accepted once
    assert len(hook.seen) == 4
    counted = fleet(jobs.core)
    assert value(counted, "t2i_webhook_failures_total", final="false") == 3
    assert value(counted, "t2i_webhook_failures_total", final="true") == 0
    assert value(counted, "t2i_webhook_deliveries_total") == 1


def test_a_receiver_down_for_the_whole_window_gets_a_dead_letter_then_its_replay(jobs, make_app, receiver,
                                                                              start_simulator, start_worker):
    hook = receiver(fail=10 ** 6)
    start_worker(start_simulator(step_seconds=0.01), WEBHOOK_RETRY_HOURS="0.002", **WEBHOOKS)  # 7.2 s
    client = make_app(webhook_secret=SECRET, webhook_allow_private=True).test_client()
    job_id = client.post("/api/jobs", json={"prompt": "nobody listens", "webhook_url": hook.url, **SMALL}).json["id"]
    letters = eventually(lambda: client.get("/api/webhooks/failed").json["failed"], timeout=60)
    assert [(letter["job_id"], letter["state"]) for letter in letters] == [(job_id, "SUCCESS")]
    attempts = len(hook.seen)
    assert attempts >= 2 and len({r["headers"]["X-Webhook-Id"] for r in hook.seen}) == 1
    counted = fleet(jobs.core)
    assert value(counted, "t2i_webhook_failures_total", final="true") == 1
    assert value(counted, "t2i_webhook_failures_total") == attempts
    assert value(counted, "t2i_webhook_dead_letters") == 1
    hook.fail = 0
    replayed = client.post(f"/api/webhooks/failed/{letters[0]['delivery_id']}/replay")
    assert replayed.status_code == 200 and client.get("/api/webhooks/failed").json["failed"] == []
    eventually(lambda: len(hook.seen) == attempts + 1, timeout=30)
    assert hook.seen[-1]["headers"]["X-Webhook-Id"] == letters[0]["delivery_id"]
    eventually(lambda: value(fleet(jobs.core), "t2i_webhook_deliveries_total") == 1, timeout=10)
    assert value(fleet(jobs.core), "t2i_webhook_dead_letters") == 0


def test_the_sending_worker_killed_mid_retry_the_delivery_still_arrives(jobs, make_app, receiver, start_simulator,
                                                                        start_worker):
    hook = receiver(fail=1)
    sim = start_simulator(step_seconds=0.01)
    first = start_worker(sim, gpu=0, **WEBHOOKS)
    client = make_app(webhook_secret=SECRET, webhook_allow_private=True).test_client()
    job_id = client.post("/api/jobs", json={"prompt": "retry me", "webhook_url": hook.url, **SMALL}).json["id"]
    eventually(lambda: len(hook.seen) == 1, timeout=30)  # the first attempt failed; a retry is scheduled
    first.signal(signal.SIGKILL)
    start_worker(start_simulator(), gpu=1, **WEBHOOKS)
    eventually(lambda: len(hook.seen) == 2, timeout=60)
    assert json.loads(hook.seen[-1]["body"])["id"] == job_id


def test_the_sending_worker_killed_mid_delivery_another_sender_takes_it_over(jobs, make_app, receiver,
                                                                             start_simulator, start_worker):
    """With the shipped CLAIM_AFTER (30 s): a delivery its sender took and never finished is taken over."""
    hook = receiver(hang=60)
    first = start_worker(start_simulator(step_seconds=0.01), gpu=0, **WEBHOOKS)
    client = make_app(webhook_secret=SECRET, webhook_allow_private=True).test_client()
    client.post("/api/jobs", json={"prompt": "slow receiver", "webhook_url": hook.url, **SMALL})
    eventually(lambda: len(hook.seen) == 1, timeout=30)
    first.signal(signal.SIGKILL)
    hook.hang = 0
    start_worker(start_simulator(), gpu=1, **WEBHOOKS)
    eventually(lambda: len(hook.seen) == 2, timeout=60)
    assert hook.seen[0]["headers"]["X-Webhook-Id"] == hook.seen[1]["headers"]["X-Webhook-Id"]


def test_private_addresses_and_other_schemes_are_refused_at_submit(make_app, core):
    client = make_app(webhook_secret=SECRET).test_client()
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://10.1.2.3/", "ftp://example.com/x",
                "http://[::1]/", "http://localhost/x"):
        answer = client.post("/api/jobs", json={"prompt": "x", "webhook_url": url, **SMALL})
        assert answer.status_code == 422 and answer.json["error"]["fields"][0]["field"] == "webhook_url", url
    assert core.dispatcher.length() == 0
    off = make_app().test_client().post("/api/jobs", json={"prompt": "x", "webhook_url": "http://1.1.1.1/", **SMALL})
    assert off.status_code == 422 and "WEBHOOK_SECRET" in off.json["error"]["fields"][0]["message"]


def test_progress_milestones_each_posted_once_then_the_end(jobs, make_app, receiver, start_simulator, start_worker):
    hook = receiver()
    start_worker(start_simulator(step_seconds=0.05), **WEBHOOKS)
    client = make_app(webhook_secret=SECRET, webhook_allow_private=True).test_client()
    made = client.post("/api/jobs", json={"prompt": "tell me as it goes", "webhook_url": hook.url,
                                          "webhook_progress": [75, 25, 50], **{**SMALL, "steps": 30}})
    assert made.status_code == 202
    job_id = made.json["id"]
    eventually(lambda: any(r["headers"]["X-Webhook-Id"] == f"{job_id}:SUCCESS" for r in hook.seen), timeout=60)
    threading.Event().wait(2)  # the point: no late or repeated delivery comes
    ids = [request["headers"]["X-Webhook-Id"] for request in hook.seen]
    assert len(ids) == len(set(ids)), ids
    milestones = [delivery_id for delivery_id in ids if ":PROGRESS-" in delivery_id]
    # Each milestone at most once, in order; one write may pass several (then only the highest is sent).
    assert milestones == sorted(milestones, key=lambda d: int(d.rsplit("-", 1)[1])) and milestones
    assert set(milestones) <= {f"{job_id}:PROGRESS-{mark}" for mark in (25, 50, 75)}
    assert milestones[-1] == f"{job_id}:PROGRESS-75" and ids[-1] == f"{job_id}:SUCCESS"
    first = json.loads(hook.seen[0]["body"])
    assert first["id"] == job_id and first["progress"]["overall_percent"] >= 25


def test_progress_milestones_are_checked(make_app):
    client = make_app(webhook_secret=SECRET, webhook_allow_private=True).test_client()
    for marks in ([], [0], [100], [50, "75"], [1.5], list(range(1, 12)), "50"):
        answer = client.post("/api/jobs", json={"prompt": "x", "webhook_url": "http://127.0.0.1:9/h",
                                                "webhook_progress": marks, **SMALL})
        assert answer.status_code == 422, marks
        assert answer.json["error"]["fields"] == [{"field": "webhook_progress", "message": (
            "must be a list of 1 to 10 whole percents from 1 to 99")}], marks
    alone = client.post("/api/jobs", json={"prompt": "x", "webhook_progress": [50], **SMALL})
    assert alone.status_code == 422
    assert alone.json["error"]["fields"] == [{"field": "webhook_progress", "message": "needs a webhook_url"}]
