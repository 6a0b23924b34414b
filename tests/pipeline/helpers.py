"""Waiting on jobs and reading simulators' request logs, for the pipeline tests."""
from __future__ import annotations

import io
import time
from typing import Any, Callable

from PIL import Image

from app.status import TERMINAL, job_status


def wait_for(job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
             seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job_status(job_id)
        assert status is not None, f"job {job_id} is unknown"
        if seen is not None:
            seen.append(status)
        if predicate(status):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not get there within {timeout}s: {job_status(job_id)}")


def wait_terminal(job_id: str, timeout: float = 60.0, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return wait_for(job_id, lambda s: s["state"] in TERMINAL, timeout, seen)


def requests_for(simulator, job_id: str) -> list[dict[str, Any]]:
    """Every request a simulator saw that belongs to one job (its id is the prompt id and the client id)."""
    return [r for r in simulator.requests_seen()
            if job_id in r.get("path", "") or r.get("prompt_id") == job_id or r.get("client_id") == job_id]


def prompts_posted(simulator, job_id: str) -> int:
    return sum(1 for r in simulator.requests_seen()
               if r.get("method") == "POST" and r.get("path") == "/prompt" and r.get("prompt_id") == job_id)


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()
