"""Submitting and cancelling jobs: what the web tier and the Python client both call."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

import redis
from celery.exceptions import TaskRevokedError
from celery.states import REVOKED
from kombu.exceptions import OperationalError

from app.celery_app import TASK_NAME, Text2ImgCelery
from app.records import job_key
from app.request import JobRequest, parse_request
from app.results import WRITTEN
from app.routing import check_runnable
from app.validation import RequestError
from app.webhooks import WebhookRefused, check_url

log = logging.getLogger("app.jobs")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


def submit(app: Text2ImgCelery, fields: dict[str, Any], input_image: bytes | None = None, client: str | None = None,
           idempotency_key: str | None = None, raw_allowed: bool = False) -> tuple[str, JobRequest]:
    """Validate and queue a job; returns (job id, request with its seed). Raises RequestError (NoCapableGPU when
no known GPU can run it) or InvalidImage.

    Nothing is queued unless the request is valid, and a job that could not be queued leaves no record.
    client: the API client creating it. idempotency_key: a retried request with the same key and the same fields
    gets the job the first one created (for RESULT_EXPIRES); the same key with other fields raises
    IdempotencyConflict. raw_allowed: the caller may send a raw workflow (a token with the workflows scope).
    The job has its queue position when this returns: it is taken into the ready index at once (app/intake.py)."""
    request = parse_request(fields, app.settings.request_limits, app.templates, raw_allowed,
                            with_image=input_image is not None)  # before anything is stored
    job_id = str(uuid.uuid4())
    if idempotency_key is not None:
        fingerprint = _fingerprint(fields, input_image)
        earlier = app.idempotency.claim(client, idempotency_key, fingerprint, job_id)
        if earlier is not None:
            return _replayed(app, earlier, fingerprint)
    try:
        queued = _queue(app, job_id, request, input_image, client)
    except Exception:
        if idempotency_key is not None:
            app.idempotency.release(client, idempotency_key)
        raise
    _kept_through_failover(app, job_id, queued, client)
    return job_id, queued


def _queue(app: Text2ImgCelery, job_id: str, request: JobRequest, input_image: bytes | None,
           client: str | None) -> JobRequest:
    check_queueable(app, request, client, image_uploaded=input_image is not None)
    client = client or request.client
    check_runnable(app.fleet, request, request.graph(job_id))
    if input_image is not None:
        request = request.with_input_image(app.inputs.save(input_image)[0])
    app.records.record_enqueued(job_id, request.to_dict(), client)
    try:
        app.send_task(TASK_NAME, kwargs=request.to_dict(), task_id=job_id)  # and takes it in (app/celery_app.py)
    except Exception:
        app.records.forget(job_id, client)
        raise
    log.info("job %s queued for %s: %s", job_id, client or "anyone", request.summary())
    return request


def check_queueable(app: Text2ImgCelery, request: JobRequest, client: str | None, image_uploaded: bool = False,
                    checked_urls: set[str] | None = None) -> None:
    """What a parsed request must also pass before it is queued (then check_runnable): the client its token names
    it, a webhook URL that may be called, and the uploaded image it names (unless it is being uploaded with it).
    Raises RequestError. checked_urls: webhook URLs that passed already (a batch's requests often share one)."""
    if client is not None and request.client not in (None, client):
        raise RequestError([{"field": "client", "message": f"is set by your token (it names you {client!r})"}])
    if request.webhook_url is not None and (checked_urls is None or request.webhook_url not in checked_urls):
        _check_webhook(app, request.webhook_url)
        if checked_urls is not None:
            checked_urls.add(request.webhook_url)
    if not image_uploaded and request.input_image is not None and not app.inputs.exists(request.input_image):
        raise RequestError([{"field": str(request.template and request.template.image_param),
                             "message": "no such uploaded image (or it has expired)"}])


def _kept_through_failover(app: Text2ImgCelery, job_id: str, request: JobRequest, client: str | None) -> None:
    """Under Sentinel, a submit answers once a replica has the job (app/connection.py), or once the master shows it
    taken into the ready index. A failover while it was queued may have taken the job back (Redis replicates
    asynchronously): then it is queued again, with the same id (the intake drops a copy of a job already queued)."""
    try:
        if app.replication.confirmed() or app.redis.hexists(job_key(job_id), "order"):
            return
        log.warning("job %s: Redis lost its submit (a failover before a replica had it); queueing it again", job_id)
        if not app.redis.exists(job_key(job_id)):
            app.records.record_enqueued(job_id, request.to_dict(), client or request.client)
        app.send_task(TASK_NAME, kwargs=request.to_dict(), task_id=job_id)
    except (redis.RedisError, OSError, OperationalError) as exc:  # it was queued: the submit stands
        log.warning("job %s: could not check that Redis kept its submit (%s)", job_id, exc)


def _check_webhook(app: Text2ImgCelery, url: str) -> None:
    if not app.settings.webhook_secret:
        raise RequestError([{"field": "webhook_url", "message": "webhooks are off: the server sets no WEBHOOK_SECRET"}])
    try:
        check_url(url, app.settings.webhook_allow_private)
    except WebhookRefused as exc:
        raise RequestError([{"field": "webhook_url", "message": str(exc)}])


def _fingerprint(fields: dict[str, Any], input_image: bytes | None) -> str:
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    digest.update(input_image or b"")
    return digest.hexdigest()


def _replayed(app: Text2ImgCelery, earlier: tuple[str, str], fingerprint: str) -> tuple[str, JobRequest]:
    job_id, earlier_fingerprint = earlier
    if earlier_fingerprint != fingerprint:
        raise IdempotencyConflict(f"this Idempotency-Key was used for job {job_id.split()[0]} with a different "
                                  f"request")  # (the first job of a batch: app/batch.py)
    stored = app.records.job(job_id).get("request")
    if not isinstance(stored, dict):
        raise IdempotencyConflict(f"this Idempotency-Key was used for job {job_id}, which is not recorded yet")
    log.info("job %s: a retried request with its Idempotency-Key", job_id)
    return job_id, parse_request(stored, app.settings.request_limits, app.templates, raw_allowed=True)


def cancel(app: Text2ImgCelery, job_id: str) -> dict[str, Any] | None:
    """Cancel a job: a queued one never starts; a running one's prompt is stopped by its worker.

    The cancel is one guarded write of the terminal REVOKED state (app/results.py): if the job had already ended,
    nothing changes. Returns the job's status after the request (None for an unknown id); what it says is final."""
    if app.statuses.job_status(job_id) is None:
        return None
    if app.backend.write(job_id, REVOKED, TaskRevokedError("cancelled")) == WRITTEN:
        log.info("job %s: cancelled", job_id)
        if not (app.replication.confirmed() or app.statuses.backend_meta(job_id).get("status") == REVOKED):
            # A failover took the cancel back (app/connection.py): it is made again, unless the job ended meanwhile.
            app.backend.write(job_id, REVOKED, TaskRevokedError("cancelled"))
        try:
            app.control.revoke(job_id)  # workers online drop it at once if it reaches them
        except (OSError, redis.RedisError, OperationalError) as exc:  # its worker watches the cancel flag too
            log.warning("job %s: revoke broadcast failed (%s); the cancel stands", job_id, exc)
    app.statuses.forget_cached(job_id)
    return app.statuses.job_status(job_id)
