"""What Redis knows of jobs and workers beside Celery's own keys: every key expires with the results.

- t2i:job:{id}      hash: created_at, request, assignment (comfyui_url, worker), started_at
- t2i:queued        zset job id -> enqueue time: queue positions without scanning the broker
- t2i:recent        list of job ids, newest first, bounded (expires when no job was queued for a while);
                    t2i:recent:{client} the same for the jobs one API client created
- t2i:idem:{hash}   an Idempotency-Key's job id and request fingerprint, for the retention window
- t2i:cancel:{id}   set when a cancel was asked for
- t2i:lease:{id}    the execution running the job now, and t2i:running: see app/leases.py
- t2i:workers       zset worker name -> last heartbeat; t2i:worker:{name} hash: gpu, comfyui_url, healthy
- t2i:ready         zset of the workers whose ComfyUI answers (they take jobs) -> last heartbeat
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from app.celery_app import celery, redis_client

RECENT_LIMIT = 200
QUEUED = "t2i:queued"
WORKER_STALE_AFTER = 3  # heartbeats
JOB_PREFIX, CANCEL_PREFIX = "t2i:job:", "t2i:cancel:"
JOB_KEY_PREFIXES = (JOB_PREFIX, CANCEL_PREFIX)  # a job's keys a snapshot reads, besides its Celery result


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def cancel_key(job_id: str) -> str:
    return CANCEL_PREFIX + job_id


def _expiry() -> int:
    return int(celery.conf.result_expires)


def _recent_key(client: str | None) -> str:
    return "t2i:recent" if client is None else f"t2i:recent:{client}"


def _push_recent(pipe: Any, job_id: str, client: str | None = None) -> None:
    for key in {_recent_key(None), _recent_key(client)}:
        pipe.lpush(key, job_id)
        pipe.ltrim(key, 0, RECENT_LIMIT - 1)
        pipe.expire(key, _expiry())


def record_enqueued(job_id: str, request: dict[str, Any], client: str | None = None) -> None:
    """client: the API token's client name that created the job (shown to operators; scopes its listing)."""
    now = time.time()
    pipe = redis_client().pipeline()
    pipe.hset(job_key(job_id), mapping={"created_at": now, "request": json.dumps(request)})
    if request.get("seed") is not None:
        pipe.hset(job_key(job_id), "seed", request["seed"])
    if client is not None:
        pipe.hset(job_key(job_id), "client", client)
    pipe.expire(job_key(job_id), _expiry())
    pipe.zadd(QUEUED, {job_id: now})
    _push_recent(pipe, job_id, client)
    pipe.execute()


def ensure_record(job_id: str, request: dict[str, Any]) -> None:
    """For jobs sent with a raw `send_task`: give them a record when a worker first sees them."""
    if redis_client().hsetnx(job_key(job_id), "request", json.dumps(request)):
        pipe = redis_client().pipeline()
        pipe.hsetnx(job_key(job_id), "created_at", time.time())
        pipe.expire(job_key(job_id), _expiry())
        _push_recent(pipe, job_id)
        pipe.execute()


def fix_seed(job_id: str, seed: int) -> int:
    """The job's seed: the first one any execution offers is kept, so a resumed job renders the same image."""
    pipe = redis_client().pipeline()
    pipe.hsetnx(job_key(job_id), "seed", seed)
    pipe.hget(job_key(job_id), "seed")
    return int(pipe.execute()[1])


def forget(job_id: str, client: str | None = None) -> None:
    """Undo record_enqueued for a job that could not be queued."""
    pipe = redis_client().pipeline()
    pipe.delete(job_key(job_id))
    pipe.zrem(QUEUED, job_id)
    for key in {_recent_key(None), _recent_key(client)}:
        pipe.lrem(key, 1, job_id)
    pipe.execute()


def claim_idempotency_key(client: str | None, key: str, fingerprint: str, job_id: str) -> tuple[str, str] | None:
    """Claim `key` (scoped to the client) for a new job; if an earlier request claimed it within the retention
    window, returns that (job id, request fingerprint) instead."""
    name = _idempotency_name(client, key)
    claim = json.dumps({"job_id": job_id, "fingerprint": fingerprint})
    if redis_client().set(name, claim, nx=True, ex=_expiry()):
        return None
    earlier = redis_client().get(name)
    if earlier is None:  # expired in between: try once more
        return claim_idempotency_key(client, key, fingerprint, job_id)
    data = json.loads(earlier)
    return data["job_id"], data["fingerprint"]


def release_idempotency_key(client: str | None, key: str) -> None:
    """For a job that could not be queued: a retry of the request may try again."""
    redis_client().delete(_idempotency_name(client, key))


def _idempotency_name(client: str | None, key: str) -> str:
    return "t2i:idem:" + hashlib.sha256(f"{client or ''}\0{key}".encode()).hexdigest()


def record_started(job_id: str, worker: str) -> None:
    pipe = redis_client().pipeline()
    pipe.zrem(QUEUED, job_id)
    pipe.hsetnx(job_key(job_id), "started_at", time.time())
    pipe.hset(job_key(job_id), "worker", worker)
    pipe.expire(job_key(job_id), _expiry())  # kept from now on, however long the job waited in the queue
    pipe.execute()


def record_running(job_id: str, since: float) -> None:
    """When the prompt started on the GPU (execution_start): a resumed job's time limit counts from it."""
    redis_client().hset(job_key(job_id), "running_since", since)


def record_assignment(job_id: str, comfyui_url: str, worker: str) -> None:
    """Written before the prompt is submitted, so a redelivered job knows which ComfyUI to ask."""
    redis_client().hset(job_key(job_id), mapping={"comfyui_url": comfyui_url, "assigned_worker": worker})


@dataclass
class Snapshot:
    """Everything the status model reads about a job, fetched in one round trip."""
    record: dict[str, Any]
    backend_raw: bytes | None
    cancel_requested: bool
    queue_position: int | None
    workers_online: int


# The status read, as one command with one reply: the per-command cost of a pipeline (packing, parsing five
# replies) was most of a status request's CPU time.
_SNAPSHOT_SCRIPT = """
local backend = false
if KEYS[5] then backend = redis.call('GET', KEYS[5]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('ZRANK', KEYS[3], ARGV[1]),
        redis.call('ZCOUNT', KEYS[4], ARGV[2], '+inf'), backend}
"""


@functools.lru_cache(maxsize=None)
def _snapshot_script(client: Any) -> Any:
    return client.register_script(_SNAPSHOT_SCRIPT)


def snapshot(job_id: str, backend_key: str | None) -> Snapshot:
    """backend_key: Celery's result key, when the result backend is this same Redis (else None)."""
    keys = [job_key(job_id), cancel_key(job_id), QUEUED, "t2i:ready", *([backend_key] if backend_key else [])]
    flat, cancel, rank, ready, backend = _snapshot_script(redis_client())(keys=keys,
                                                                          args=[job_id, _stale_before(None)])
    raw = dict(zip(flat[::2], flat[1::2]))
    return Snapshot(_parse_record(raw), backend, bool(cancel), None if rank is None else rank + 1, int(ready))


def job(job_id: str) -> dict[str, Any]:
    """The job's record, {} for an id never queued (or expired)."""
    return _parse_record(redis_client().hgetall(job_key(job_id)))


def _parse_record(raw: dict[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    if "request" in record:
        record["request"] = json.loads(record["request"])
    for name in ("created_at", "started_at", "running_since", "finished_at"):
        if name in record:
            record[name] = float(record[name])
    return record


def queue_length() -> int:
    return int(redis_client().zcard(QUEUED))


def recent(limit: int = 50, client: str | None = None) -> list[str]:
    """The newest jobs first: every client's, or those one API client created."""
    return [item.decode() for item in redis_client().lrange(_recent_key(client), 0, max(0, limit - 1))]


def cancel_requested(job_id: str) -> bool:
    return bool(redis_client().exists(cancel_key(job_id)))


def heartbeat(worker: str, info: dict[str, Any], healthy: bool, interval: float) -> None:
    """Also forgets workers whose heartbeat went stale (containers that are gone), so the sets stay small."""
    now = time.time()
    pipe = redis_client().pipeline()
    pipe.zremrangebyscore("t2i:workers", 0, _stale_before(interval))
    pipe.zremrangebyscore("t2i:ready", 0, _stale_before(interval))
    pipe.zadd("t2i:workers", {worker: now})
    if healthy:
        pipe.zadd("t2i:ready", {worker: now})
    else:
        pipe.zrem("t2i:ready", worker)
    pipe.hset(f"t2i:worker:{worker}", mapping={k: json.dumps(v) for k, v in info.items()})
    pipe.expire(f"t2i:worker:{worker}", int(interval * WORKER_STALE_AFTER) + 1)
    pipe.execute()


def worker_gone(worker: str) -> None:
    pipe = redis_client().pipeline()
    pipe.zrem("t2i:workers", worker)
    pipe.zrem("t2i:ready", worker)
    pipe.delete(f"t2i:worker:{worker}")
    pipe.execute()


def _stale_before(interval: float | None) -> float:
    return time.time() - (interval or celery.conf.text2img_worker_heartbeat) * WORKER_STALE_AFTER


def workers_online_count() -> int:
    """GPU workers that take jobs now: heartbeat fresh and their ComfyUI answering."""
    return int(redis_client().zcount("t2i:ready", _stale_before(None), "+inf"))


def workers_online(interval: float | None = None) -> list[dict[str, Any]]:
    """Workers whose heartbeat is fresh, with what they last said (gpu, comfyui_url, healthy)."""
    client = redis_client()
    client.zremrangebyscore("t2i:workers", 0, _stale_before(interval))
    workers = []
    for name in client.zrange("t2i:workers", 0, -1):
        raw = client.hgetall(f"t2i:worker:{name.decode()}")
        if raw:
            workers.append({"name": name.decode(), **{k.decode(): json.loads(v) for k, v in raw.items()}})
    return workers
