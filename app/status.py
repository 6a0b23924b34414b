"""The status model: one function turns what Redis holds about a job into its public status.

States: QUEUED -> STARTED -> PROGRESS -> SUCCESS | FAILURE | CANCELLED. The web tier and the Python client
only read this; nothing here talks to a worker or to ComfyUI."""
from __future__ import annotations

import json
from typing import Any, Callable

from app.snapshot import Snapshot

TERMINAL = ("SUCCESS", "FAILURE", "CANCELLED")
CELERY_TO_PUBLIC = {"PENDING": "QUEUED", "RECEIVED": "QUEUED", "RETRY": "QUEUED", "REVOKED": "CANCELLED"}
QUEUED_STATES = ("PENDING", "RECEIVED", "RETRY")
PROGRESS_FIELDS = ("phase", "progress", "node", "cached_nodes", "eta_seconds", "message", "worker", "comfyui_url",
                   "started_at", "updated_at", "lost_at")


def progress_summary(status: dict[str, Any]) -> str:
    """One line: '45.0% Sampler step 9/20 ETA 3s' (the CLI's progress bar, and what Flower shows)."""
    progress = status.get("progress") or {}
    node = (status.get("node") or {}).get("title") or status.get("phase", "")
    steps = f" step {progress.get('value')}/{progress.get('max')}" if progress.get("max") else ""
    eta = status.get("eta_seconds")
    return f"{float(progress.get('overall_percent') or 0):5.1f}% {node}{steps}" + \
        (f" ETA {eta:.0f}s" if eta is not None else "")


def public_status(job_id: str, snap: Snapshot, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The public status of a job from its snapshot and Celery's stored meta; None when the id is unknown (never
    queued, or expired). Its `updated_at` is None (see `stamped`) unless the job's progress says when it changed."""
    celery_state = meta.get("status", "PENDING")
    if not snap.record and celery_state == "PENDING":
        return None
    state = CELERY_TO_PUBLIC.get(celery_state, celery_state)
    if state not in TERMINAL and snap.cancel_requested:
        state = "CANCELLED"
    status: dict[str, Any] = {
        "id": job_id,
        "state": state,
        "created_at": snap.record.get("created_at"),
        "request": snap.record.get("request"),
        "updated_at": None,
    }
    if "client" in snap.record:
        status["client"] = snap.record["client"]
    result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    describe = _DESCRIBE.get(state)
    if describe is not None:
        describe(status, result, snap, celery_state)
    return status


def stamped(status: dict[str, Any], read_at: float) -> dict[str, Any]:
    """A copy of a public status, its `updated_at` the time it was read unless the job's progress said when it
    changed."""
    return {**status, "updated_at": read_at if status["updated_at"] is None else status["updated_at"]}


def encoded_around_stamp(status: dict[str, Any]) -> tuple[str, str | None]:
    """A public status as compact JSON (as the web tier answers), in two parts: `stamped(status, t)` encodes as
    head + repr(t) + tail. (The whole of it, None, when the job's progress fixed its `updated_at`.)"""
    if status["updated_at"] is not None:
        return _compact(status), None
    names = list(status)
    at = names.index("updated_at")
    before = {name: status[name] for name in names[:at]}
    after = {name: status[name] for name in names[at + 1:]}
    head = _compact(before)[:-1] + ("," if before else "") + '"updated_at":'
    tail = "," + _compact(after)[1:] if after else "}"
    return head, tail


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _queued(status: dict[str, Any], result: dict[str, Any], snap: Snapshot, celery_state: str) -> None:
    position, workers = snap.queue_position, snap.workers_online
    status["phase"] = "queued"
    status["queue"] = {"position": position, "workers_online": workers, "capable_workers": snap.capable_workers}
    if celery_state == "RETRY":
        status["message"] = "Retrying on another GPU"
    elif not workers:
        status["message"] = "Waiting for a GPU worker to come online"
    elif snap.capable_workers == 0:
        status["message"] = "Waiting for a GPU that has what this job needs (none online does)"
    else:
        status["message"] = f"Waiting for a GPU (position {position})" if position else "Waiting for a GPU"


def _started(status: dict[str, Any], result: dict[str, Any], snap: Snapshot,
             celery_state: str) -> None:
    status["phase"] = "starting"
    status["worker"] = result.get("hostname") or snap.record.get("worker")
    status["started_at"] = snap.record.get("started_at")
    status["message"] = "Starting"


def _progress(status: dict[str, Any], result: dict[str, Any], snap: Snapshot,
              celery_state: str) -> None:
    status.update({name: result[name] for name in PROGRESS_FIELDS if name in result})


def _success(status: dict[str, Any], result: dict[str, Any], snap: Snapshot,
             celery_state: str) -> None:
    steps = snap.record.get("request", {}).get("steps", 0)
    status.update(phase="done", message="Done", progress={"value": steps, "max": steps, "percent": 100.0,
                                                             "overall_percent": 100.0})
    status.update({name: result[name] for name in ("images", "seed", "timings", "worker", "comfyui_url",
                                                    "started_at", "finished_at") if name in result})


def _failure(status: dict[str, Any], result: dict[str, Any], snap: Snapshot,
             celery_state: str) -> None:
    args = result.get("exc_message")
    args = list(args) if isinstance(args, (list, tuple)) else [args]
    details = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
    reason = str(args[0]) if args and args[0] is not None else str(result.get("exc_type", "failed"))
    status.update(phase="failed", message=f"Failed: {reason}", finished_at=snap.record.get("finished_at"))
    status["error"] = {
        "reason": reason,
        "node_id": details.get("node_id"),
        "node_type": details.get("node_type"),
        "exception_type": details.get("exception_type") or result.get("exc_type"),
        "comfyui_url": details.get("comfyui_url"),
    }
    if details.get("worker"):
        status["worker"] = details["worker"]


def _cancelled(status: dict[str, Any], result: dict[str, Any], snap: Snapshot,
               celery_state: str) -> None:
    status.update(phase="cancelled", message="Cancelled", finished_at=snap.record.get("finished_at"))


_DESCRIBE: dict[str, Callable[[dict[str, Any], dict[str, Any], Snapshot, str], None]] = {"QUEUED": _queued, "STARTED": _started, "PROGRESS": _progress, "SUCCESS": _success,
             "FAILURE": _failure, "CANCELLED": _cancelled}
