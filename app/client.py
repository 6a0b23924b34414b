"""The Python client for other programs: `Client(redis_url=...).submit(**request) -> Job`, then `status()`,
`wait()`, `images()`, `cancel()`. Two kinds of client side by side: `Client` for programs that share the Redis,
`HttpClient` for programs that only reach the web tier. Their jobs wait the same way: by polling the public
status."""
from __future__ import annotations

import abc
import time
from typing import Any, Callable

import requests

from app.batch import submit_many as submit_batch
from app.celery_app import Text2ImgCelery, create_celery
from app.jobs import cancel
from app.jobs import submit as submit_job
from app.settings import Settings
from app.status import TERMINAL

ProgressCallback = Callable[[dict[str, Any]], None]


class JobError(Exception):
    """The job ended without images (FAILURE or CANCELLED), or is unknown."""

    def __init__(self, job_id: str, status: dict[str, Any] | None, message: str):
        super().__init__(f"job {job_id}: {message}")
        self.job_id = job_id
        self.status = status


class Job(abc.ABC):
    def __init__(self, job_id: str):
        self.id = job_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """The public status (see app/status.py); raises JobError for an unknown id."""

    @abc.abstractmethod
    def cancel(self) -> dict[str, Any]:
        """Ask for the job to be cancelled; returns the status after."""

    @abc.abstractmethod
    def _image(self, index: int) -> bytes:
        """One stored output image."""

    def wait(self, timeout: float | None = None, on_progress: ProgressCallback | None = None,
             interval: float = 0.25) -> dict[str, Any]:
        """Poll until the job ends; on_progress gets every status that changed. Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Any = None
        while True:
            status = self.status()
            seen = (status["state"], status.get("phase"), status.get("progress"), status.get("queue"))
            if on_progress is not None and seen != last:
                on_progress(status)
            last = seen
            if status["state"] in TERMINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {status['state']} after {timeout} s")
            time.sleep(interval)

    def images(self) -> list[bytes]:
        """Every output image of a successful job; raises JobError if it failed, was cancelled or is running."""
        status = self.status()
        if status["state"] != "SUCCESS":
            reason = (status.get("error") or {}).get("reason") or status.get("message") or status["state"]
            raise JobError(self.id, status, f"no images: {status['state']} ({reason})")
        return [self._image(image["index"]) for image in status["images"]]


class LocalJob(Job):
    """A job seen through the shared Redis."""

    def __init__(self, job_id: str, app: Text2ImgCelery):
        super().__init__(job_id)
        self.app = app

    def status(self) -> dict[str, Any]:
        status = self.app.statuses.job_status(self.id)
        if status is None:
            raise JobError(self.id, None, "unknown job (never queued, or expired)")
        return status

    def cancel(self) -> dict[str, Any]:
        status = cancel(self.app, self.id)
        if status is None:
            raise JobError(self.id, None, "unknown job (never queued, or expired)")
        return status

    def _image(self, index: int) -> bytes:
        data = self.app.outputs.load(self.id, index)
        if data is None:
            raise JobError(self.id, None, f"image {index} has expired")
        return data


class Client:
    """For programs that share the Redis: `Client(redis_url="redis://host:6379/0")`, or `Client(settings)`;
    `Client()` takes its settings from the environment (REDIS_URL ...)."""

    def __init__(self, settings: Settings | None = None, redis_url: str | None = None):
        settings = settings or Settings.from_env()
        self.app = create_celery(settings.replace(redis_url=redis_url) if redis_url else settings)

    def submit(self, input_image: bytes | None = None, idempotency_key: str | None = None,
               **request: Any) -> LocalJob:
        """Queue a job: a template's parameters (`template=` names it), or `workflow=` a raw ComfyUI API-format
        graph (anyone who shares the Redis may send one); raises RequestError for a bad request.

        idempotency_key: submitting again with the same key and fields returns the same job (a retry after a
        timeout never makes a second one); the same key with other fields raises IdempotencyConflict."""
        job_id, _ = submit_job(self.app, request, input_image=input_image, idempotency_key=idempotency_key,
                               raw_allowed=True)
        return LocalJob(job_id, self.app)

    def submit_many(self, requests: list[dict[str, Any]], idempotency_key: str | None = None) -> list[LocalJob]:
        """Queue up to MAX_REQUESTS (1,000) jobs at once, in this order, each a dict of what `submit` takes as
        keyword arguments (no input_image: a request may name an image uploaded before); one job per request, in
        the same order. All or nothing: one bad request raises RequestError naming `requests[<index>].<field>`,
        and none is queued. Far faster than submitting one by one (app/batch.py).

        idempotency_key: submitting the same list again with the same key returns the same jobs."""
        queued = submit_batch(self.app, requests, idempotency_key=idempotency_key, raw_allowed=True)
        return [LocalJob(job_id, self.app) for job_id, _ in queued]

    def job(self, job_id: str) -> LocalJob:
        return LocalJob(job_id, self.app)

    def close(self) -> None:
        """Closes this client's connections."""
        self.app.close()

    def workers(self) -> list[dict[str, Any]]:
        """GPU workers online, with their ComfyUI URLs and health."""
        return self.app.fleet.online()


class HttpClient:
    """For programs that reach only the web tier: `HttpClient("http://host:8000", token=...)`."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = error["message"] + "".join(f"; {f['field']}: {f['message']}" for f in error.get("fields", []))
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise JobError(path.rsplit("/", 1)[-1], None, f"HTTP {response.status_code}: {message}")
        return response

    def submit(self, input_image: bytes | None = None, idempotency_key: str | None = None,
               **request: Any) -> "HttpJob":
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        if input_image is None:
            answer = self.call("POST", "/api/jobs", json=request, headers=headers).json()
        else:
            form = {name: str(value) for name, value in request.items()}
            answer = self.call("POST", "/api/jobs", data=form, files={"image": ("input.png", input_image)},
                               headers=headers).json()
        return HttpJob(answer["id"], self)

    def submit_many(self, requests: list[dict[str, Any]], idempotency_key: str | None = None) -> list["HttpJob"]:
        """POST /api/jobs/batch: up to 1,000 JSON requests at once, all or nothing; one job per request, in order."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        answer = self.call("POST", "/api/jobs/batch", json={"requests": requests}, headers=headers).json()
        return [HttpJob(job["id"], self) for job in answer["jobs"]]

    def job(self, job_id: str) -> "HttpJob":
        return HttpJob(job_id, self)


class HttpJob(Job):
    def __init__(self, job_id: str, client: HttpClient):
        super().__init__(job_id)
        self.client = client

    def status(self) -> dict[str, Any]:
        return self.client.call("GET", f"/api/jobs/{self.id}").json()

    def cancel(self) -> dict[str, Any]:
        return self.client.call("DELETE", f"/api/jobs/{self.id}").json()

    def _image(self, index: int) -> bytes:
        return self.client.call("GET", f"/api/jobs/{self.id}/images/{index}").content
