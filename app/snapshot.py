"""A snapshot: everything the status model reads about a job, fetched from Redis in one round trip."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from app.fleet import READY, Fleet
from app.records import QUEUE_INDEX, cancel_key, job_key, parse_record

# One command with one reply: the per-command cost of a pipeline (packing, parsing five replies) was most of a
# status request's CPU time.
_SNAPSHOT_SCRIPT = """
local backend = false
if KEYS[5] then backend = redis.call('GET', KEYS[5]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('ZRANK', KEYS[3], ARGV[1]),
        redis.call('ZCOUNT', KEYS[4], ARGV[2], '+inf'), backend}
"""


@dataclass
class Snapshot:
    record: dict[str, Any]
    backend_raw: bytes | None
    cancel_requested: bool
    queue_position: int | None
    workers_online: int


class Snapshots:
    def __init__(self, client: redis.Redis, fleet: Fleet):
        self.fleet = fleet
        self.script = client.register_script(_SNAPSHOT_SCRIPT)

    def read(self, job_id: str, backend_key: str | None) -> Snapshot:
        """backend_key: Celery's result key, when the result backend is this same Redis (else None)."""
        keys = [job_key(job_id), cancel_key(job_id), QUEUE_INDEX, READY, *([backend_key] if backend_key else [])]
        flat, cancel, rank, ready, backend = self.script(keys=keys, args=[job_id, self.fleet.stale_before()])
        raw = dict(zip(flat[::2], flat[1::2]))
        return Snapshot(parse_record(raw), backend, bool(cancel), None if rank is None else rank + 1, int(ready))
