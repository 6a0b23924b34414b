"""Waiting on jobs and reading simulators' request logs, for the pipeline tests."""
from __future__ import annotations

import io
import time
from typing import Any, Callable

from PIL import Image

from app.status import TERMINAL, job_status


def eventually(check: Callable[[], Any], timeout: float = 30.0, failure: Callable[[], str] | None = None) -> Any:
    """Calls `check` every 20 ms until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(failure() if failure else f"not true within {timeout}s: {check}")


def wait_for(job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
             seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = job_status(job_id)
        assert status is not None, f"job {job_id} is unknown"
        if seen is not None:
            seen.append(status)
        return status if predicate(status) else None

    return eventually(reached, timeout,
                      lambda: f"job {job_id} did not get there within {timeout}s: {job_status(job_id)}")


def wait_terminal(job_id: str, timeout: float = 60.0, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return wait_for(job_id, lambda s: s["state"] in TERMINAL, timeout, seen)


def requests_for(simulator, job_id: str) -> list[dict[str, Any]]:
    """Every request a simulator saw that belongs to one job (its id is the prompt id and the client id)."""
    return [r for r in simulator.requests_seen()
            if job_id in r.get("path", "") or r.get("prompt_id") == job_id or r.get("client_id") == job_id]


def prompt_posts(simulator, job_id: str) -> list[dict[str, Any]]:
    """The simulator's log entries of each POST /prompt for this job's prompt id."""
    return [r for r in simulator.requests_seen()
            if r.get("method") == "POST" and r.get("path") == "/prompt" and r.get("prompt_id") == job_id]


def prompts_posted(simulator, job_id: str) -> int:
    return len(prompt_posts(simulator, job_id))


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


class StateWrites:
    """Every state write of one job, as published by the result backend (a poller could miss a brief one)."""

    def __init__(self, job_id: str):
        from app.celery_app import celery, redis_client
        self.backend = celery.backend
        self.pubsub = redis_client().pubsub()
        self.pubsub.subscribe(self.backend.get_key_for_task(job_id))
        self.seen: list[dict] = []

    def read(self) -> list[dict]:
        while (message := self.pubsub.get_message(timeout=0.01)) is not None:
            if message["type"] == "message":
                self.seen.append(self.backend.decode(message["data"]))
        return self.seen

    def states(self) -> list[str]:
        return [m["status"] for m in self.read()]

    def recovering(self, timeout: float = 30.0) -> dict:
        def found() -> dict | None:
            return next((m["result"] for m in self.read() if isinstance(m.get("result"), dict)
                         and m["result"].get("phase") == "recovering"), None)
        return eventually(found, timeout=timeout)
