"""Reading a job's public status from Redis alone: fresh, or (for pollers) from this process's snapshot cache."""
from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery

from app.records import JOB_KEY_PREFIXES
from app.snapshot import Snapshot, Snapshots
from app.snapshot_cache import SnapshotCache
from app.status import QUEUED_STATES, public_status


class StatusReader:
    """app: whose result backend holds Celery's state of each job (Celery keeps one backend per thread).
    shared: whether that backend is the Redis that holds the job records (one round trip per read).
    use_cache: STATUS_CACHE."""

    def __init__(self, app: Celery, snapshots: Snapshots, shared: bool, use_cache: bool):
        self.app = app
        self.snapshots = snapshots
        self.shared = shared
        self.use_cache = use_cache and shared
        self._caches: dict[int, SnapshotCache[Snapshot]] = {}  # by process id: a forked child starts its own
        self._caches_lock = threading.Lock()

    def job_status(self, job_id: str, cached: bool = False) -> dict[str, Any] | None:
        """The public status of a job; None when the id is unknown (never queued, or expired).

        cached: from this process's snapshot cache (app/snapshot_cache.py) where it is on: for pollers. Reads
        right after this process's own writes use the default, a fresh read."""
        if cached and self.use_cache:
            snap = self.cache().get(job_id, lambda: self._snapshot(job_id), keep=self._settled)
        else:
            snap = self._snapshot(job_id)
        meta = self._decode_meta(snap.backend_raw) if self.shared else self.backend_meta(job_id)
        return public_status(job_id, snap, meta)

    def backend_meta(self, job_id: str) -> dict[str, Any]:
        """Celery's stored meta for the job, as JSON (exceptions are left as the dicts they were stored as)."""
        backend = self.app.backend
        return self._decode_meta(backend.get(backend.get_key_for_task(job_id)))

    def cache(self) -> SnapshotCache[Snapshot]:
        """This process's snapshot cache (one per process: each follows Redis on its own connections)."""
        pid = os.getpid()
        with self._caches_lock:
            if pid not in self._caches:
                prefixes = (*JOB_KEY_PREFIXES, self.app.backend.task_keyprefix.decode())
                self._caches[pid] = SnapshotCache(self.app.settings, prefixes)
            return self._caches[pid]

    def forget_cached(self, job_id: str) -> None:
        """This process changed the job: its next cached read goes to Redis."""
        cache = self._caches.get(os.getpid())
        if cache is not None:
            cache.forget(job_id)

    def close(self) -> None:
        """Stops this reader's snapshot caches (their threads and connections)."""
        with self._caches_lock:
            for cache in self._caches.values():
                cache.stop()
            self._caches.clear()

    def _decode_meta(self, raw: bytes | None) -> dict[str, Any]:
        return self.app.backend.decode(raw) if raw else {"status": "PENDING", "result": None}

    def _snapshot(self, job_id: str) -> Snapshot:
        return self.snapshots.read(job_id, self.app.backend.get_key_for_task(job_id) if self.shared else None)

    def _settled(self, snap: Snapshot) -> bool:
        """Whether the status depends on the job's own keys alone (a queued job's also on the queue and workers)."""
        return snap.backend_raw is not None and self._decode_meta(snap.backend_raw).get("status") not in QUEUED_STATES
