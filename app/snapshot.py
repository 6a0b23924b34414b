"""A snapshot: everything the status model reads about a job, fetched from Redis in one round trip."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from app.fleet import READY, Fleet
from app.dispatch import ORDER, QUEUE_INDEX
from app.records import cancel_key, job_key, parse_record

# One command with one reply: the per-command cost of a pipeline (packing, parsing five replies) was most of a
# status request's CPU time.
# A queued job's snapshot also counts the GPUs online that have everything it needs (app/dispatch.py).
_SNAPSHOT_SCRIPT = """
local backend = false
if KEYS[6] then backend = redis.call('GET', KEYS[6]) end
local order, rank, capable = redis.call('HGET', KEYS[3], ARGV[1]), false, false
if order then
  rank = redis.call('ZRANK', KEYS[4], order)
  local needs = 't2i:needs:' .. (redis.call('HGET', KEYS[1], 'group') or '')
  capable = 0
  for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[2], '+inf')) do
    local can = 't2i:can:' .. worker
    if redis.call('EXISTS', can) == 1 and #redis.call('SDIFF', needs, can) == 0 then capable = capable + 1 end
  end
end
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2]), rank,
        redis.call('ZCOUNT', KEYS[5], ARGV[2], '+inf'), backend, capable}
"""


@dataclass
class Snapshot:
    record: dict[str, Any]
    backend_raw: bytes | None
    cancel_requested: bool
    queue_position: int | None
    workers_online: int
    capable_workers: int | None = None  # of those online, the ones that can run it (while it is queued)


class Snapshots:
    def __init__(self, client: redis.Redis, fleet: Fleet):
        self.fleet = fleet
        self.script = client.register_script(_SNAPSHOT_SCRIPT)

    def read(self, job_id: str, backend_key: str | None) -> Snapshot:
        """backend_key: Celery's result key, when the result backend is this same Redis (else None)."""
        keys = [job_key(job_id), cancel_key(job_id), ORDER, QUEUE_INDEX, READY,
                *([backend_key] if backend_key else [])]
        flat, cancel, rank, ready, backend, capable = self.script(keys=keys, args=[job_id, self.fleet.stale_before()])
        raw = dict(zip(flat[::2], flat[1::2]))
        return Snapshot(parse_record(raw), backend, bool(cancel), None if rank is None else rank + 1, int(ready),
                        capable)
