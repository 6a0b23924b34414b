"""Following jobs through the system: submitting, reading and waiting for a state as the web tier and the
Python client do, every state write of a job, and the image a job must have delivered."""
from __future__ import annotations

from typing import Any, Callable

from app import jobs
from app.celery_app import Text2ImgCelery
from app.request import JobRequest, parse_request
from app.templates import Templates
from app.validation import RequestLimits
from app.status import TERMINAL
from testkit.images import pixels
from testkit.services import SimulatorProcess
from testkit.waiting import eventually
from workers.comfyui import ComfyUIClient, Succeeded


class Jobs:
    """The jobs of one Celery app (`core`), for tests: submit, cancel, status, Celery's meta, waiting."""

    def __init__(self, core: Text2ImgCelery):
        self.core = core

    def submit(self, fields: dict[str, Any], **options: Any) -> tuple[str, JobRequest]:
        return jobs.submit(self.core, fields, **options)

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        return jobs.cancel(self.core, job_id)

    def status(self, job_id: str) -> dict[str, Any] | None:
        return self.core.statuses.job_status(job_id)

    def meta(self, job_id: str) -> dict[str, Any]:
        return self.core.statuses.backend_meta(job_id)

    def wait_for(self, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
                 seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The job's status once `predicate` holds for it; every status read is appended to `seen`, if given."""
        def reached() -> dict[str, Any] | None:
            status = self.status(job_id)
            assert status is not None, f"job {job_id} is unknown"
            if seen is not None:
                seen.append(status)
            return status if predicate(status) else None

        return eventually(reached, timeout,
                          lambda: f"job {job_id} did not get there within {timeout}s: {self.status(job_id)}")

    def wait_terminal(self, job_id: str, timeout: float = 60.0,
                      seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return self.wait_for(job_id, lambda s: s["state"] in TERMINAL, timeout, seen)

    def state_writes(self, job_id: str) -> "StateWrites":
        return StateWrites(self.core, job_id)


def template_graph(fields: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The graph a job of these fields runs (the shipped templates, the default limits)."""
    return parse_request(fields, RequestLimits(), Templates()).graph(job_id)


def reference_pixels(reference_sim: SimulatorProcess, request_fields: dict, seed: int) -> bytes:
    """What ComfyUI makes of this request, asked directly: the image a job must have delivered."""
    client = ComfyUIClient(reference_sim.url)
    with client.stream() as stream:
        prompt_id = client.submit(template_graph({**request_fields, "seed": seed}, "reference")).prompt_id
        final = list(stream.follow(prompt_id))[-1]
    assert isinstance(final, Succeeded)
    return pixels(client.download(final.images[0]))


class StateWrites:
    """Every state write of one job, as published by the result backend (a poller could miss a brief one)."""

    def __init__(self, core: Text2ImgCelery, job_id: str):
        self.backend = core.backend
        self.pubsub = core.redis.pubsub()
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
