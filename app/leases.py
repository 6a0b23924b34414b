"""Job leases: which execution of a job is alive.

An execution holds `t2i:lease:{id}` (its owner token, with a time to live) from when it takes the job until its
terminal write, and keeps it alive (`LeaseKeeper`, from the process's one refresher thread) through every long
operation. While it holds the lease, the job is listed in `t2i:running` (job id -> the broker delivery that carries
it), which is what the reaper (workers/reaper.py) reads to find jobs whose execution died.

Taking, refreshing and releasing are each one Lua compare-and-set on the owner token, so an execution that lost
its lease can never get it back by refreshing, and never deletes the lease of the execution that took over."""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from app.records import JOB_PREFIX

log = logging.getLogger("app.leases")

LEASE_PREFIX = "t2i:lease:"
RUNNING = "t2i:running"
REFRESHES_PER_TTL = 5
IDLE_LOOK = 1.0  # seconds between the refresher's looks while it holds no lease

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #KEYS > 1 then redis.call('HSET', KEYS[2], unpack(ARGV, 3)) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""


def lease_key(job_id: str) -> str:
    return LEASE_PREFIX + job_id


class LeaseLost(Exception):
    """This execution no longer holds the job's lease: it stops at once and writes nothing more."""


@dataclass(frozen=True)
class Holder:
    """What `t2i:running` says of an execution: the broker delivery it runs and the worker that runs it."""
    delivery_tag: str
    worker: str
    owner: str
    since: float

    @classmethod
    def parse(cls, raw: bytes | str) -> "Holder":
        data = json.loads(raw)
        return cls(str(data["delivery_tag"]), str(data["worker"]), str(data["owner"]), float(data["since"]))


class Lease:
    """One execution's claim on one job."""

    def __init__(self, client: redis.Redis, job_id: str, worker: str, ttl: float):
        self._acquire, self._refresh, self._release = (client.register_script(text)
                                                       for text in (_ACQUIRE, _REFRESH, _RELEASE))
        self.job_id = job_id
        self.worker = worker
        self.ttl = ttl
        self.owner = f"{worker}/{uuid.uuid4().hex[:12]}"
        self.key = lease_key(job_id)

    def acquire(self, delivery_tag: str) -> bool:
        """True if the job was free (or already ours): it is ours now, listed as running on `delivery_tag`."""
        return bool(self._acquire(keys=[self.key, RUNNING], args=self._acquire_args(delivery_tag)))

    def queue_acquire(self, pipe: Any, delivery_tag: str) -> None:
        """acquire(), queued in a pipeline that is not a transaction, by the script's SHA (whoever runs the
        pipeline loads `scripts` and runs it again on NOSCRIPT); its reply is 1 if the lease is ours."""
        pipe.evalsha(self._acquire.sha, 2, self.key, RUNNING, *self._acquire_args(delivery_tag))

    @property
    def scripts(self) -> tuple[Any, ...]:
        return (self._acquire,)

    def _acquire_args(self, delivery_tag: str) -> list[Any]:
        holder = json.dumps({"delivery_tag": delivery_tag, "worker": self.worker, "owner": self.owner,
                             "since": time.time()})
        return [self.owner, self._ttl_ms(), self.job_id, holder]

    def refresh(self, record: dict[str, str] | None = None) -> bool:
        """False once the lease is no longer ours (it expired, or another execution took it). `record`: fields
        written on the job's record in the same step, only while the lease is ours."""
        keys, fields = [self.key], []
        if record:
            keys.append(JOB_PREFIX + self.job_id)
            fields = [part for field in record.items() for part in field]
        return bool(self._refresh(keys=keys, args=[self.owner, self._ttl_ms(), *fields]))

    def release(self) -> None:
        self._release(keys=[self.key, RUNNING], args=[self.owner, self.job_id])

    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)


class LeaseKeeper:
    """Keeps a lease alive from the process's refresher thread (`_Refresher`) until the block ends; `lost` is set
    once the lease is not ours any more, or when Redis could not confirm it for a whole time to live (another
    execution may have it by then)."""

    def __init__(self, lease: Lease):
        self.lease = lease
        self.lost = threading.Event()
        self.interval = lease.ttl / REFRESHES_PER_TTL
        self.confirmed = time.monotonic()

    def __enter__(self) -> "LeaseKeeper":
        self.confirmed = time.monotonic()
        _REFRESHER.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _REFRESHER.remove(self)

    def refresh(self) -> None:
        """One refresh, from the refresher's thread."""
        try:
            if not self.lease.refresh():
                self._lose("another execution holds it, or it expired")
                return
            self.confirmed = time.monotonic()
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() - self.confirmed > self.lease.ttl:
                self._lose(f"Redis did not confirm it for {self.lease.ttl:g} s ({exc})")
                return
            log.warning("job %s: lease refresh failed (%s); retrying", self.lease.job_id, exc)

    def ensure_held(self, confirm: bool = False, record: dict[str, str] | None = None) -> None:
        """Raises LeaseLost if the lease is gone; with `confirm`, asks Redis now (before a step that must not
        run twice: a submit, storing the outputs), and writes `record`'s fields on the job's record if it is."""
        if not self.lost.is_set() and confirm and not self.lease.refresh(record):
            self._lose("another execution holds it, or it expired")
        if self.lost.is_set():
            raise LeaseLost(self.lease.job_id)

    def _lose(self, why: str) -> None:
        log.warning("job %s on %s: lost its lease: %s", self.lease.job_id, self.lease.worker, why)
        self.lost.set()


class _Refresher:
    """One thread per process refreshes every lease held there, each every LEASE_TTL / REFRESHES_PER_TTL: a job
    does not start (and wait for) a thread of its own. A lease found lost is not refreshed again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.due: dict[LeaseKeeper, float] = {}  # keeper -> when it is next refreshed (monotonic)
        self.changed = threading.Event()
        self.wakes_at = float("-inf")  # when the thread next looks, unless woken (monotonic)
        self.thread: threading.Thread | None = None

    def add(self, keeper: LeaseKeeper) -> None:
        """The thread is woken only if it would look too late for the new lease: waking it at a job's start would
        take the GIL from the job's thread just as it submits its prompt."""
        with self.lock:
            due = self.due[keeper] = time.monotonic() + keeper.interval
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lease-refresher", daemon=True)
                self.thread.start()
            wake = due < self.wakes_at
        if wake:
            self.changed.set()

    def remove(self, keeper: LeaseKeeper) -> None:
        with self.lock:
            self.due.pop(keeper, None)

    def _run(self) -> None:
        while True:
            self.changed.clear()
            now = time.monotonic()
            with self.lock:
                due = [keeper for keeper, at in self.due.items() if at <= now]
            for keeper in due:
                keeper.refresh()
                with self.lock:
                    if keeper in self.due:
                        self.due[keeper] = time.monotonic() + keeper.interval
                        if keeper.lost.is_set():
                            del self.due[keeper]
            with self.lock:
                self.wakes_at = min(self.due.values(), default=time.monotonic() + IDLE_LOOK)
                wait = self.wakes_at - time.monotonic()
            self.changed.wait(max(0.0, wait))


_REFRESHER = _Refresher()


def holders(client: redis.Redis) -> dict[str, Holder]:
    """Every job listed as running, by job id."""
    return {job_id.decode(): Holder.parse(raw) for job_id, raw in client.hgetall(RUNNING).items()}
