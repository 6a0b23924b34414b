"""The JSON API: /api/jobs and its images, previews and cancel; health and readiness. Answers from Redis alone."""
from __future__ import annotations

from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, request, url_for

from app.jobs import cancel
from app.validation import is_job_id
from web.auth import require_token
from web.context import celery_app
from web.errors import ApiError
from web.openapi import openapi_document
from web.submission import queue_job, queue_jobs

bp = Blueprint("api", __name__)

MAX_RECENT = 100
T = TypeVar("T")


def status_or_404(job_id: str) -> dict[str, Any]:
    return _known(job_id, celery_app().statuses.job_status(job_id, cached=True) if is_job_id(job_id) else None)


def _known(job_id: str, found: T | None) -> T:
    if found is None:
        raise ApiError(404, "not_found", f"no job {job_id[:64]!r} (unknown or expired)")
    return found


@bp.post("/api/jobs")
@require_token
def create_job() -> Any:
    job_id, job_request = queue_job()
    status_url = url_for("api.get_job", job_id=job_id)
    response = jsonify({"id": job_id, "status_url": status_url, "state": "QUEUED", "seed": job_request.seed})
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


@bp.post("/api/jobs/batch")
@require_token
def create_jobs() -> Any:
    """Up to 1,000 jobs at once, all or nothing: one answer listing them in the order of the requests."""
    queued = [{"id": job_id, "status_url": url_for("api.get_job", job_id=job_id), "state": "QUEUED",
               "seed": job_request.seed} for job_id, job_request in queue_jobs()]
    response = jsonify({"jobs": queued})
    response.status_code = 202
    return response


@bp.get("/api/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    """What pollers ask for over and over: the status's JSON comes encoded from the status cache (what jsonify
    makes of status_or_404 outside debug mode)."""
    body = _known(job_id, celery_app().statuses.job_status_json(job_id) if is_job_id(job_id) else None)
    response = Response(body + "\n", mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/api/jobs/<job_id>")
@require_token
def cancel_job(job_id: str) -> Any:
    status_or_404(job_id)
    return jsonify(cancel(celery_app(), job_id))


@bp.get("/api/jobs")
@require_token
def recent_jobs() -> Any:
    """The newest jobs; with API_TOKENS set, only those the caller's client created."""
    limit = request.args.get("limit", "20")
    if not (limit.isascii() and limit.isdigit() and len(limit.lstrip("0")) <= 3) or not 1 <= int(limit) <= MAX_RECENT:
        raise ApiError(400, "invalid_request", f"limit must be a whole number from 1 to {MAX_RECENT}",
                       [{"field": "limit", "message": f"must be from 1 to {MAX_RECENT}"}])
    queue = celery_app()
    statuses = [queue.statuses.job_status(job_id, cached=True) for job_id in queue.records.recent(int(limit), g.client)]
    return jsonify({"jobs": [s for s in statuses if s is not None]})


@bp.get("/api/jobs/<job_id>/images/<index>")
def job_image(job_id: str, index: str) -> Any:
    status = status_or_404(job_id)
    images = {str(image["index"]): image for image in status.get("images") or []}
    if status["state"] != "SUCCESS" or index not in images:
        raise ApiError(404, "not_found", f"job {job_id} has no image {index[:16]!r}")
    data = celery_app().outputs.load(job_id, int(index))
    if data is None:
        raise ApiError(404, "expired", f"image {index} of job {job_id} has expired")
    response = Response(data, mimetype=images[index]["content_type"])
    response.headers["Cache-Control"] = "public, max-age=86400, immutable"
    response.headers["Content-Disposition"] = f'inline; filename="{job_id}-{index}.png"'
    response.set_etag(f"{job_id}-{index}")
    return response.make_conditional(request)


@bp.get("/api/jobs/<job_id>/preview")
def job_preview(job_id: str) -> Any:
    status_or_404(job_id)
    preview = celery_app().previews.latest(job_id)
    if preview is None:
        return Response(status=204)
    content_type, data = preview
    response = Response(data, mimetype=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/webhooks/failed")
@require_token
def failed_webhooks() -> Any:
    """Deliveries that kept failing for WEBHOOK_RETRY_HOURS; with API_TOKENS, only the caller's jobs'."""
    return jsonify({"failed": celery_app().webhooks.dead_letters(g.client)})


@bp.post("/api/webhooks/failed/<delivery_id>/replay")
@require_token
def replay_webhook(delivery_id: str) -> Any:
    if not celery_app().webhooks.replay(delivery_id, g.client):
        raise ApiError(404, "not_found", f"no failed webhook delivery {delivery_id[:80]!r}")
    return jsonify({"replayed": delivery_id})


@bp.get("/api/openapi.json")
def openapi() -> Any:
    queue = celery_app()
    return jsonify(openapi_document(queue.templates, queue.settings.request_limits))


@bp.get("/api/templates")
def templates() -> Any:
    """Read from TEMPLATES_DIR, again when a file there changes: a new template is listed without a restart."""
    queue = celery_app()
    limits = queue.settings.request_limits
    return jsonify({"default": queue.templates.default, "default_for_image": queue.templates.default_for_image,
                    "templates": [template.describe(limits) for template in queue.templates.all()]})


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    queue = celery_app()
    queue.redis.ping()
    workers = queue.fleet.ready_count()
    body = {"redis": "ok", "gpu_workers_online": workers, "status": "ready" if workers else "no GPU workers online",
            "workers": queue.fleet.online()}
    response = jsonify(body)
    response.status_code = 200 if workers else 503
    return response
