"""Submitting and cancelling jobs: what the web tier and the Python client both call."""
from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import redis
from celery.exceptions import TaskRevokedError
from celery.states import REVOKED
from kombu.exceptions import OperationalError

from app import registry
from app.celery_app import RECORDED_HEADER, TASK_NAME, celery
from app.inputs import input_exists, save_input
from app.request import JobRequest, RequestError, parse_request
from app.results import WRITTEN
from app.status import forget_cached, job_status

log = logging.getLogger("app.jobs")


def submit(fields: dict[str, Any], input_image: bytes | None = None) -> tuple[str, JobRequest]:
    """Validate and queue a job; returns (job id, request with its seed). Raises RequestError or InvalidImage.

    Nothing is queued unless the request is valid, and a job that could not be queued leaves no record."""
    if input_image is not None:
        fields = {"template": "img2img", **fields, "input_image": "pending-upload"}
    request = parse_request(fields)  # before anything is stored
    if input_image is not None:
        request = dataclasses.replace(request, input_image=save_input(input_image)[0])
    elif request.input_image is not None and not input_exists(request.input_image):
        raise RequestError([{"field": "input_image", "message": "no such uploaded image (or it has expired)"}])
    job_id = str(uuid.uuid4())
    registry.record_enqueued(job_id, request.to_dict())
    try:
        celery.send_task(TASK_NAME, kwargs=request.to_dict(), task_id=job_id, headers={RECORDED_HEADER: True})
    except Exception:
        registry.forget(job_id)
        raise
    log.info("job %s queued: %dx%d, %d steps, seed %s", job_id, request.width, request.height, request.steps,
             request.seed)
    return job_id, request


def cancel(job_id: str) -> dict[str, Any] | None:
    """Cancel a job: a queued one never starts; a running one's prompt is stopped by its worker.

    The cancel is one guarded write of the terminal REVOKED state (app/results.py): if the job had already ended,
    nothing changes. Returns the job's status after the request (None for an unknown id); what it says is final."""
    if job_status(job_id) is None:
        return None
    if celery.backend.write(job_id, REVOKED, TaskRevokedError("cancelled")) == WRITTEN:
        log.info("job %s: cancelled", job_id)
        try:
            celery.control.revoke(job_id)  # workers online drop it at once if it reaches them
        except (OSError, redis.RedisError, OperationalError) as exc:  # its worker watches the cancel flag too
            log.warning("job %s: revoke broadcast failed (%s); the cancel stands", job_id, exc)
    forget_cached(job_id)
    return job_status(job_id)
