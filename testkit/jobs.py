"""Following jobs through the system: waiting for a state, every state write of a job, and the image a job
must have delivered."""
from __future__ import annotations

from typing import Any, Callable

from app.request import parse_request
from app.status import TERMINAL, job_status
from app.workflow import build_workflow
from testkit.images import pixels
from testkit.services import SimulatorProcess
from testkit.waiting import eventually
from workers.comfyui import ComfyUIClient, Succeeded


def wait_for(job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
             seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The job's status once `predicate` holds for it; every status read is appended to `seen`, if given."""
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


def reference_pixels(reference_sim: SimulatorProcess, request_fields: dict, seed: int) -> bytes:
    """What ComfyUI makes of this request, asked directly: the image a job must have delivered."""
    request = parse_request({**request_fields, "seed": seed})
    client = ComfyUIClient(reference_sim.url)
    with client.stream() as stream:
        prompt_id = client.submit(build_workflow(request, "reference")).prompt_id
        final = list(stream.follow(prompt_id))[-1]
    assert isinstance(final, Succeeded)
    return pixels(client.download(final.images[0]))


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
