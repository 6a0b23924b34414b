"""The status model: one function turns what Redis holds about a job into its public status.

States: QUEUED -> STARTED -> PROGRESS -> SUCCESS | FAILURE | CANCELLED. The web tier and the Python client
only read this; nothing here talks to a worker or to ComfyUI."""
from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

from app import registry
from app.celery_app import celery
from app.snapshot_cache import SnapshotCache

TERMINAL = ("SUCCESS", "FAILURE", "CANCELLED")
CELERY_TO_PUBLIC = {"PENDING": "QUEUED", "RECEIVED": "QUEUED", "RETRY": "QUEUED", "REVOKED": "CANCELLED"}
QUEUED_STATES = ("PENDING", "RECEIVED", "RETRY")
PROGRESS_FIELDS = ("phase", "progress", "node", "cached_nodes", "eta_seconds", "message", "worker", "comfyui_url",
                   "started_at", "updated_at", "lost_at")
_caches: dict[int, SnapshotCache[registry.Snapshot]] = {}  # by process id: a forked child starts its own
_caches_lock = threading.Lock()


def progress_summary(status: dict[str, Any]) -> str:
    """One line: '45.0% Sampler step 9/20 ETA 3s' (the CLI's progress bar, and what Flower shows)."""
    progress = status.get("progress") or {}
    node = (status.get("node") or {}).get("title") or status.get("phase", "")
    steps = f" step {progress.get('value')}/{progress.get('max')}" if progress.get("max") else ""
    eta = status.get("eta_seconds")
    return f"{float(progress.get('overall_percent') or 0):5.1f}% {node}{steps}" + \
        (f" ETA {eta:.0f}s" if eta is not None else "")


def backend_meta(job_id: str) -> dict[str, Any]:
    """Celery's stored meta for the job, as JSON (exceptions are left as the dicts they were stored as)."""
    backend = celery.backend
    return _decode_meta(backend.get(backend.get_key_for_task(job_id)))


def _decode_meta(raw: bytes | None) -> dict[str, Any]:
    return celery.backend.decode(raw) if raw else {"status": "PENDING", "result": None}


@functools.cache
def _shares_redis() -> bool:
    return celery.conf.result_backend == celery.conf.broker_url


def job_status(job_id: str, cached: bool = False) -> dict[str, Any] | None:
    """The public status of a job; None when the id is unknown (never queued, or expired).

    cached: from this process's snapshot cache (app/snapshot_cache.py) where it is on (STATUS_CACHE): for
    pollers. Reads right after this process's own writes use the default, a fresh read."""
    shared = _shares_redis()
    if cached and shared and celery.conf.text2img_status_cache:
        snap = status_cache().get(job_id, lambda: _snapshot(job_id, shared), keep=_settled)
    else:
        snap = _snapshot(job_id, shared)
    meta = _decode_meta(snap.backend_raw) if shared else backend_meta(job_id)
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
        "updated_at": time.time(),
    }
    if "client" in snap.record:
        status["client"] = snap.record["client"]
    result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    describe = _DESCRIBE.get(state)
    if describe is not None:
        describe(status, result, snap, celery_state)
    return status


def _snapshot(job_id: str, shared: bool) -> registry.Snapshot:
    return registry.snapshot(job_id, celery.backend.get_key_for_task(job_id) if shared else None)


def _settled(snap: registry.Snapshot) -> bool:
    """Whether the status depends on the job's own keys alone (a queued job's also on the queue and workers)."""
    return snap.backend_raw is not None and _decode_meta(snap.backend_raw).get("status") not in QUEUED_STATES


def status_cache() -> SnapshotCache[registry.Snapshot]:
    """This process's snapshot cache (one per process: each follows Redis on its own connections)."""
    pid = os.getpid()
    with _caches_lock:
        if pid not in _caches:
            prefixes = (*registry.JOB_KEY_PREFIXES, celery.backend.task_keyprefix.decode())
            _caches[pid] = SnapshotCache(celery.conf.result_backend, prefixes)
        return _caches[pid]


def forget_cached(job_id: str) -> None:
    """This process changed the job: its next cached read goes to Redis."""
    cache = _caches.get(os.getpid())
    if cache is not None:
        cache.forget(job_id)


def _queued(status: dict[str, Any], result: dict[str, Any], snap: registry.Snapshot, celery_state: str) -> None:
    position, workers = snap.queue_position, snap.workers_online
    status["phase"] = "queued"
    status["queue"] = {"position": position, "workers_online": workers}
    if celery_state == "RETRY":
        status["message"] = "Retrying on another GPU"
    elif not workers:
        status["message"] = "Waiting for a GPU worker to come online"
    else:
        status["message"] = f"Waiting for a GPU (position {position})" if position else "Waiting for a GPU"


def _started(status: dict[str, Any], result: dict[str, Any], snap: registry.Snapshot,
             celery_state: str) -> None:
    status["phase"] = "starting"
    status["worker"] = result.get("hostname") or snap.record.get("worker")
    status["started_at"] = snap.record.get("started_at")
    status["message"] = "Starting"


def _progress(status: dict[str, Any], result: dict[str, Any], snap: registry.Snapshot,
              celery_state: str) -> None:
    status.update({name: result[name] for name in PROGRESS_FIELDS if name in result})


def _success(status: dict[str, Any], result: dict[str, Any], snap: registry.Snapshot,
             celery_state: str) -> None:
    steps = snap.record.get("request", {}).get("steps", 0)
    status.update(phase="done", message="Done", progress={"value": steps, "max": steps, "percent": 100.0,
                                                             "overall_percent": 100.0})
    status.update({name: result[name] for name in ("images", "seed", "timings", "worker", "comfyui_url",
                                                    "started_at", "finished_at") if name in result})


def _failure(status: dict[str, Any], result: dict[str, Any], snap: registry.Snapshot,
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


def _cancelled(status: dict[str, Any], result: dict[str, Any], snap: registry.Snapshot,
               celery_state: str) -> None:
    status.update(phase="cancelled", message="Cancelled", finished_at=snap.record.get("finished_at"))


_DESCRIBE = {"QUEUED": _queued, "STARTED": _started, "PROGRESS": _progress, "SUCCESS": _success,
             "FAILURE": _failure, "CANCELLED": _cancelled}
