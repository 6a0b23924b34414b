"""Submitting and cancelling jobs: what the web tier and the Python client both call."""
from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import redis
from celery.exceptions import TaskRevokedError
from celery.states import PENDING, REVOKED
from kombu.exceptions import OperationalError

from app import registry
from app.celery_app import RECORDED_HEADER, TASK_NAME, celery, redis_client
from app.inputs import input_exists, save_input
from app.request import JobRequest, RequestError, parse_request
from app.status import TERMINAL, forget_cached, job_status

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

    Returns the job's status after the request (None for an unknown id). A finished job stays as it was."""
    status = job_status(job_id)
    if status is None or status["state"] in TERMINAL:
        return status
    registry.request_cancel(job_id)
    try:
        celery.control.revoke(job_id)  # workers online drop it at once if it reaches them
    except (OSError, redis.RedisError, OperationalError) as exc:  # best effort: workers check the flag too
        log.warning("job %s: revoke broadcast failed (%s); the cancel flag stands", job_id, exc)
    _revoke_if_still_queued(job_id)
    forget_cached(job_id)
    log.info("job %s: cancel requested", job_id)
    return job_status(job_id)


def _revoke_if_still_queued(job_id: str) -> None:
    """Write the terminal REVOKED state now if no worker has started the job (atomically against one that does)."""
    backend = celery.backend
    key = backend.get_key_for_task(job_id)
    with redis_client().pipeline() as pipe:
        try:
            pipe.watch(key)
            raw = pipe.get(key)
            if raw and backend.decode(raw).get("status") != PENDING:
                return
            meta = backend._get_result_meta(result=backend.prepare_exception(TaskRevokedError("cancelled")),
                                            state=REVOKED, traceback=None, request=None)
            value = backend.encode(meta)
            pipe.multi()
            pipe.set(key, value, ex=backend.expires)
            pipe.publish(key, value)
            pipe.zrem(registry.QUEUED, job_id)
            pipe.execute()
        except redis.WatchError:
            log.info("job %s started while being cancelled; its worker stops it", job_id)
