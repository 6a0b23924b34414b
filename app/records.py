"""Job records: what Redis knows of each job beside Celery's own keys; every key expires with the results.

- t2i:job:{id}      hash: created_at, request, seed, client, started_at and worker (written by the STARTED state
                    write), running_since, comfyui_url, comfyui_client_id, assigned_worker, finished_at (written
                    by the terminal state write, app/results.py), and what dispatch keeps of the job
                    (app/dispatch.py)
- t2i:recent        list of job ids, newest first, bounded (expires when no job was queued for a while);
                    t2i:recent:{client} the same for the jobs one API client created
- t2i:cancel:{id}   set when a cancel was asked for
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import redis

RECENT_LIMIT = 200
JOB_PREFIX, CANCEL_PREFIX = "t2i:job:", "t2i:cancel:"
JOB_KEY_PREFIXES = (JOB_PREFIX, CANCEL_PREFIX)  # a job's keys a status reads, besides its Celery result


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def cancel_key(job_id: str) -> str:
    return CANCEL_PREFIX + job_id


def recent_key(client: str | None) -> str:
    return "t2i:recent" if client is None else f"t2i:recent:{client}"


def parse_record(raw: dict[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    if "request" in record:
        record["request"] = json.loads(record["request"])
    for name in ("created_at", "started_at", "running_since", "finished_at"):
        if name in record:
            record[name] = float(record[name])
    return record


def _webhook_fields(request: dict[str, Any]) -> dict[str, str]:
    """Where the job's webhooks go, and its progress milestones (ascending percents, read by app/results.py)."""
    fields = {"webhook_url": request["webhook_url"]}
    marks = request.get("webhook_progress")
    if isinstance(marks, list) and marks and all(type(mark) is int for mark in marks):
        fields["webhook_progress"] = ",".join(str(mark) for mark in sorted(marks))
    return fields


class JobRecords:
    """expires: seconds every key is kept (RESULT_EXPIRES)."""

    def __init__(self, client: redis.Redis, expires: int):
        self.redis = client
        self.expires = expires

    def _push_recent(self, pipe: Any, job_id: str, client: str | None = None) -> None:
        for key in {recent_key(None), recent_key(client)}:
            pipe.lpush(key, job_id)
            pipe.ltrim(key, 0, RECENT_LIMIT - 1)
            pipe.expire(key, self.expires)

    def record_enqueued(self, job_id: str, request: dict[str, Any], client: str | None = None) -> None:
        """client: the API token's client name that created the job (shown to operators; scopes its listing)."""
        pipe = self.redis.pipeline()
        self.record_many(pipe, [(job_id, request, json.dumps(request), client)])
        pipe.execute()

    def record_many(self, pipe: Any, jobs: list[tuple[str, dict[str, Any], str, str | None]]) -> None:
        """Queues in `pipe` the records of jobs being queued, in this order (the last one is the newest): each
        (job id, request, the request as JSON, client), recorded as record_enqueued records one job."""
        now = time.time()
        recent: dict[str | None, list[str]] = {None: []}
        for job_id, request, request_json, client in jobs:
            fields: dict[str, Any] = {"created_at": now, "request": request_json}
            if request.get("seed") is not None:
                fields["seed"] = request["seed"]
            if request.get("webhook_url"):
                fields.update(_webhook_fields(request))
            if client is not None:
                fields["client"] = client
                recent.setdefault(client, []).append(job_id)
            pipe.hset(job_key(job_id), mapping=fields)
            pipe.expire(job_key(job_id), self.expires)
            recent[None].append(job_id)
        for client, job_ids in recent.items():
            if not job_ids:
                continue
            key = recent_key(client)
            pipe.lpush(key, *job_ids[-RECENT_LIMIT:])
            pipe.ltrim(key, 0, RECENT_LIMIT - 1)
            pipe.expire(key, self.expires)

    def ensure_record(self, job_id: str, request: dict[str, Any], seed: int | None = None) -> int | None:
        """For jobs sent by task name: recorded when the intake (or a worker) first sees them. With a seed (an
        execution's), returns the job's seed: the first one any execution offered, so a resumed job renders the
        same image."""
        pipe = self.redis.pipeline()
        settle = self.queue_ensure_record(pipe, job_id, request, seed)
        return settle(pipe.execute())

    def queue_ensure_record(self, pipe: Any, job_id: str, request: dict[str, Any],
                            seed: int | None) -> Callable[[list[Any]], int | None]:
        """ensure_record's commands, queued first in `pipe`; the function returned takes the pipeline's replies,
        finishes the record if these commands made it, and returns the seed."""
        pipe.hsetnx(job_key(job_id), "request", json.dumps(request))
        pipe.hsetnx(job_key(job_id), "created_at", time.time())  # so that a read later in `pipe` has it
        if seed is not None:
            pipe.hsetnx(job_key(job_id), "seed", seed)
            pipe.hget(job_key(job_id), "seed")

        def settle(replies: list[Any]) -> int | None:
            if replies[0]:
                self._complete_record(job_id, request)
            return None if seed is None else int(replies[3])
        return settle

    def _complete_record(self, job_id: str, request: dict[str, Any]) -> None:
        client = request.get("client") if isinstance(request.get("client"), str) else None
        pipe = self.redis.pipeline()
        pipe.hsetnx(job_key(job_id), "created_at", time.time())
        if client is not None:
            pipe.hsetnx(job_key(job_id), "client", client)
        if isinstance(request.get("webhook_url"), str):
            for name, value in _webhook_fields(request).items():
                pipe.hsetnx(job_key(job_id), name, value)
        pipe.expire(job_key(job_id), self.expires)
        self._push_recent(pipe, job_id, client)
        pipe.execute()

    def forget(self, job_id: str, client: str | None = None) -> None:
        """Undo record_enqueued for a job that could not be queued."""
        self.forget_many([(job_id, client)])

    def forget_many(self, jobs: list[tuple[str, str | None]]) -> None:
        """forget() for each (job id, client)."""
        pipe = self.redis.pipeline()
        for job_id, client in jobs:
            pipe.delete(job_key(job_id))
            for key in {recent_key(None), recent_key(client)}:
                pipe.lrem(key, 1, job_id)
        pipe.execute()

    def record_running(self, job_id: str, since: float) -> None:
        """When the prompt started on the GPU (execution_start): a resumed job's time limit counts from it."""
        self.redis.hset(job_key(job_id), "running_since", since)

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's record, {} for an id never queued (or expired)."""
        return parse_record(self.redis.hgetall(job_key(job_id)))

    def client_of(self, job_id: str) -> str | None:
        client = self.redis.hget(job_key(job_id), "client")
        return None if client is None else client.decode()

    def recent(self, limit: int = 50, client: str | None = None) -> list[str]:
        """The newest jobs first: every client's, or those one API client created."""
        return [item.decode() for item in self.redis.lrange(recent_key(client), 0, max(0, limit - 1))]

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))
