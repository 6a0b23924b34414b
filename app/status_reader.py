"""Reading a job's public status from Redis alone: fresh, or (for pollers) from this process's snapshot cache."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import Celery

from app.records import JOB_KEY_PREFIXES
from app.snapshot import Snapshots
from app.snapshot_cache import SnapshotCache
from app.status import QUEUED_STATES, encoded_around_stamp, public_status, stamped

MAX_UNSETTLED_NOTED = 10_000


@dataclass(eq=False)
class Reading:
    """A job's public status as read from Redis (None: unknown; not yet `stamped`), and whether it depends on the
    job's own keys alone (then the snapshot cache may keep it: their writes invalidate it)."""
    status: dict[str, Any] | None
    settled: bool

    def json(self, read_at: float) -> str:
        """The known status, stamped at `read_at`, as compact JSON: encoded once, only the time put in each call."""
        head, tail = self._encoded
        return head if tail is None else f"{head}{read_at!r}{tail}"

    @cached_property
    def _encoded(self) -> tuple[str, str | None]:
        assert self.status is not None
        return encoded_around_stamp(self.status)


class StatusReader:
    """app: whose result backend holds Celery's state of each job (Celery keeps one backend per thread).
    shared: whether that backend is the Redis that holds the job records (one round trip per read).
    use_cache: STATUS_CACHE."""

    def __init__(self, app: Celery, snapshots: Snapshots, shared: bool, use_cache: bool):
        self.app = app
        self.snapshots = snapshots
        self.shared = shared
        self.use_cache = use_cache and shared
        self._caches: dict[int, SnapshotCache[Reading]] = {}  # by process id: a forked child starts its own
        self._caches_lock = threading.Lock()
        self._unsettled: set[str] = set()  # ids of the jobs last read queued (or unknown): read straight from Redis

    def job_status(self, job_id: str, cached: bool = False) -> dict[str, Any] | None:
        """The public status of a job; None when the id is unknown (never queued, or expired).

        cached: from this process's snapshot cache (app/snapshot_cache.py) where it is on: for pollers. Reads
        right after this process's own writes use the default, a fresh read."""
        reading = self._reading(job_id, cached)
        return None if reading.status is None else stamped(reading.status, time.time())

    def job_status_json(self, job_id: str) -> str | None:
        """job_status(job_id, cached=True) as compact JSON, encoded once per reading of the job (for pollers)."""
        reading = self._reading(job_id, cached=True)
        return None if reading.status is None else reading.json(time.time())

    def backend_meta(self, job_id: str) -> dict[str, Any]:
        """Celery's stored meta for the job, as JSON (exceptions are left as the dicts they were stored as)."""
        backend = self.app.backend
        return self._decode_meta(backend.get(backend.get_key_for_task(job_id)))

    def cache(self) -> SnapshotCache[Reading]:
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

    def _reading(self, job_id: str, cached: bool) -> Reading:
        if not (cached and self.use_cache):
            return self._read(job_id)
        if job_id in self._unsettled:  # the cache would not keep it: it would only add its own work to the read
            reading = self._read(job_id)
        else:
            reading = self.cache().get(job_id, lambda: self._read(job_id), keep=lambda read: read.settled)
        self._note(job_id, reading)
        return reading

    def _note(self, job_id: str, reading: Reading) -> None:
        if reading.settled:
            self._unsettled.discard(job_id)
            return
        if len(self._unsettled) >= MAX_UNSETTLED_NOTED:
            self._unsettled.clear()  # hints only: a job forgotten is looked up in the cache once more
        self._unsettled.add(job_id)

    def _read(self, job_id: str) -> Reading:
        snap = self.snapshots.read(job_id, self.app.backend.get_key_for_task(job_id) if self.shared else None)
        meta = self._decode_meta(snap.backend_raw) if self.shared else self.backend_meta(job_id)
        # A queued job's status also depends on the queue and the workers, whose writes invalidate nothing.
        settled = snap.backend_raw is not None and meta.get("status") not in QUEUED_STATES
        return Reading(public_status(job_id, snap, meta), settled)
