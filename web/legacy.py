"""The simple API, kept for existing front ends: POST /generate, GET /status/<id>, GET /result/<id>. Their
payloads (the first design's: `prompt_id`, `status` pending/running/completed/failed, `image_url` ...) are mapped
from the same status model as /api/jobs."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from web.api import status_or_404
from web.auth import require_token
from web.submission import queue_job

bp = Blueprint("legacy", __name__)

LEGACY_STATE = {"QUEUED": "pending", "STARTED": "pending", "PROGRESS": "running", "SUCCESS": "completed",
                "FAILURE": "failed", "CANCELLED": "failed"}


def legacy_status(status: dict[str, Any]) -> dict[str, Any]:
    progress = status.get("progress") or {}
    node = status.get("node") or {}
    images = status.get("images") or []
    error = status.get("error") or {}
    return {
        "status": LEGACY_STATE[status["state"]],
        "progress": {"value": progress.get("value", 0), "max": progress.get("max", 0)},
        "current_node": node.get("id"),
        "message": status.get("message"),
        "image_url": images[0]["url"] if images else None,
        "error": error.get("reason") or ("cancelled" if status["state"] == "CANCELLED" else None),
        "created_at": status.get("created_at"),
        "completed_at": status.get("finished_at"),
    }


@bp.post("/generate")
@require_token
def generate() -> Any:
    job_id, job_request = queue_job()
    return jsonify({"prompt_id": job_id, "status": "pending", "seed": job_request.seed})


@bp.get("/status/<job_id>")
def status(job_id: str) -> Any:
    return jsonify(legacy_status(status_or_404(job_id)))


@bp.get("/result/<job_id>")
def result(job_id: str) -> Any:
    legacy = legacy_status(status_or_404(job_id))
    return jsonify({key: legacy[key] for key in ("status", "image_url", "completed_at", "error")})
