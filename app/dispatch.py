"""Dispatch: which GPU runs which job next, with priorities, fair shares between clients, and model-aware routing.

A job waits in the ready index until a GPU worker that can run it has a free slot:

- t2i:queued          zset, every score 0, members `{band}{start}{seq}:{job id}` in lexical order: the one global
                      order, and so each job's exact queue position (its rank). band = 9 - priority (a higher
                      priority sorts first). start is the job's virtual start in its client's fair share: a client's
                      queued jobs start one unit apart from the band's virtual clock on, so another client's single
                      job is placed after at most one of theirs (start-time fair queuing). seq keeps arrival order.
- t2i:group:{sig}     zset, the same members for the jobs that need the same things; t2i:groups lists the
                      signatures with jobs queued; t2i:needs:{sig} the needs (app/capabilities.py)
- t2i:order           hash job id -> its member, while it is queued
- t2i:can:{worker}    set, what the worker's ComfyUI offers, in the same words as the needs
- t2i:waiting         zset, the workers with a free slot and nothing to run -> since when (a pipelining slot, the
                      second one of a busy GPU, sorts after every idle GPU)
- t2i:assigned:{worker}  set, the jobs handed to the worker that have not ended there; t2i:dispatch:dispatched_to
                      lists the workers that have such a set
- t2i:dispatch:last_checkpoint  hash worker -> the checkpoint of the job it was handed last
- t2i:dispatch:vclock, t2i:dispatch:vfinish  each band's virtual clock (the start of the job handed last), and
                      the next start of each client with jobs queued in the band (`band:client`)
- t2i:dispatch:seq, t2i:dispatch:delivery_seq  counters
- on the job's record (t2i:job:{id}): order, fair (`band:client`), group, needs, checkpoint and its Celery message (its head and its
  properties), kept so that a job handed back is handed out again in its old place (the job's terminal write drops
  the message and the needs); handed_to, the worker it was handed to last

A job is handed to a worker by pushing its Celery message, with a fresh delivery tag, onto the worker's own queue
`t2i.gpu.<worker>`, which only that worker consumes: Celery, Flower and the result backend see an ordinary task.
Each decision is one Lua script, so no job goes to two workers and none is lost between two steps:
- place (a job taken in, or handed back): to a waiting worker that can run it, at once, preferring an idle GPU
  to a pipelining one and, among those, one that last ran the same checkpoint (no model reload); else into the
  index.
- pull (a worker with a free slot): the first job in the global order among the groups it can run; if there is
  none, the worker waits.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from app.fleet import Fleet
from app.leases import LEASE_PREFIX
from app.records import JOB_PREFIX, job_key

QUEUE_INDEX, ORDER, WAITING = "t2i:queued", "t2i:order", "t2i:waiting"
DISPATCHED_TO = "t2i:dispatch:dispatched_to"
# Published (the job id) when a job leaves the ready index for a GPU: the positions behind it changed (app/events.py).
QUEUE_EVENTS = "t2i:events:queue"
WORKER_QUEUE_PREFIX = "t2i.gpu."
# Jobs taken in by one script of a batch: Redis serves other clients between two scripts.
TAKE_IN_CHUNK = 100


def worker_queue(worker: str) -> str:
    """The Celery queue only this worker consumes."""
    return WORKER_QUEUE_PREFIX + worker


def assigned_key(worker: str) -> str:
    return f"t2i:assigned:{worker}"


@dataclass(frozen=True)
class Entry:
    """A job as the index keeps it: its priority, its client, what it needs, and its Celery message."""
    job_id: str
    priority: int
    client: str
    needs: tuple[str, ...]
    checkpoint: str
    message: dict[str, Any]

    @property
    def band(self) -> str:
        return str(9 - self.priority)

    @property
    def group(self) -> str:
        return hashlib.sha1("\n".join(sorted(self.needs)).encode()).hexdigest()[:16]

    def message_parts(self) -> tuple[str, str]:
        """The message as JSON without its properties and closing brace (the scripts add properties for the
        delivery they make), and the properties as JSON."""
        head = {name: value for name, value in self.message.items() if name != "properties"}
        return json.dumps(head)[:-1], json.dumps(self.message.get("properties") or {})


def _job_of(raw: bytes) -> str | None:
    try:
        return str(json.loads(raw)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


_FUNCTIONS = """
local function capable(worker, needs_key)
  if redis.call('EXISTS', 't2i:can:' .. worker) == 0 then return false end
  return #redis.call('SDIFF', needs_key, 't2i:can:' .. worker) == 0
end

local function settled(job)
  return redis.call('EXISTS', 'LEASE_PREFIX' .. job) == 1 or redis.call('HEXISTS', 't2i:order', job) == 1
end

local function ended(job)
  local meta = redis.call('GET', 'celery-task-meta-' .. job)
  if not meta then return false end
  local ok, decoded = pcall(cjson.decode, meta)
  if not ok or type(decoded) ~= 'table' then return false end
  local status = decoded['status']
  return status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
end

-- The job's message, with a new delivery tag, onto the worker's own queue.
local function hand(worker, job, record, order)
  local props = cjson.decode(redis.call('HGET', record, 'message_props'))
  local queue = 't2i.gpu.' .. worker
  props['delivery_tag'] = job .. '/' .. redis.call('INCR', 't2i:dispatch:delivery_seq')
  props['delivery_info'] = {exchange = '', routing_key = queue}
  redis.call('LPUSH', queue, redis.call('HGET', record, 'message_head') .. ', "properties": ' ..
             cjson.encode(props) .. '}')
  redis.call('SADD', 't2i:assigned:' .. worker, job)
  redis.call('SADD', 't2i:dispatch:dispatched_to', worker)
  redis.call('ZREM', 't2i:waiting', worker)
  redis.call('HSET', 't2i:dispatch:last_checkpoint', worker, redis.call('HGET', record, 'checkpoint') or '')
  redis.call('HSET', record, 'handed_to', worker)
  local band, start = string.sub(order, 1, 1), tonumber(string.sub(order, 2, 16))
  if start > tonumber(redis.call('HGET', 't2i:dispatch:vclock', band) or '0') then
    redis.call('HSET', 't2i:dispatch:vclock', band, start)
  end
  -- The client's last queued job in its band: its next start is the clock's again (kept only while it has any).
  local fair = redis.call('HGET', record, 'fair')
  if fair and tonumber(redis.call('HGET', 't2i:dispatch:vfinish', fair) or '0') <= start + 1 then
    redis.call('HDEL', 't2i:dispatch:vfinish', fair)
  end
end

-- A job taken in or handed back: to the best waiting worker that can run it, else into the index.
local function place(job, stale_before)
  local record = 'JOB_PREFIX' .. job
  local order, group = redis.call('HGET', record, 'order'), redis.call('HGET', record, 'group')
  local needs_key = 't2i:needs:' .. group
  if redis.call('EXISTS', needs_key) == 0 then
    for _, need in ipairs(cjson.decode(redis.call('HGET', record, 'needs'))) do redis.call('SADD', needs_key, need) end
  end
  local checkpoint = redis.call('HGET', record, 'checkpoint') or ''
  local best, best_rank = nil, 4
  local waiting = redis.call('ZRANGE', 't2i:waiting', 0, -1, 'WITHSCORES')
  for i = 1, #waiting, 2 do
    local worker, score = waiting[i], tonumber(waiting[i + 1])
    local beat = redis.call('ZSCORE', 't2i:ready', worker)
    if not beat or tonumber(beat) < tonumber(stale_before) then
      redis.call('ZREM', 't2i:waiting', worker)
    elseif capable(worker, needs_key) then
      local rank = (score >= PIPELINING and 2 or 0) +
                   (redis.call('HGET', 't2i:dispatch:last_checkpoint', worker) == checkpoint and 0 or 1)
      if rank < best_rank then best, best_rank = worker, rank end
      if rank == 0 then break end
    end
  end
  if best then
    hand(best, job, record, order)
    return 'handed:' .. best
  end
  redis.call('ZADD', 't2i:queued', 0, order)
  redis.call('ZADD', 't2i:group:' .. group, 0, order)
  redis.call('SADD', 't2i:groups', group)
  redis.call('HSET', 't2i:order', job, order)
  return 'queued'
end

-- A job's Celery message (`head` and `props`, see Entry.message_parts) becomes a job in the index, or goes straight
-- to a waiting worker: a new job gets its order (priority band, its client's fair-share start, arrival); a job
-- already ordered (sent again: a retry) goes back to its old place, unless it has ended or is queued or running.
local function take_in(job, band, client, group, needs, checkpoint, head, props, stale_before)
  local record = 'JOB_PREFIX' .. job
  if ended(job) then return 'ended' end  -- its terminal write dropped the message: a late copy adds nothing back
  redis.call('HSET', record, 'message_head', head, 'message_props', props)
  if redis.call('HEXISTS', record, 'order') == 1 then
    if settled(job) then return 'settled' end  -- queued, or running: a copy
    return place(job, stale_before)  -- sent again (a retry): handed back in its old place
  end
  local fair = band .. ':' .. client
  local start = math.max(tonumber(redis.call('HGET', 't2i:dispatch:vclock', band) or '0'),
                         tonumber(redis.call('HGET', 't2i:dispatch:vfinish', fair) or '0'))
  redis.call('HSET', 't2i:dispatch:vfinish', fair, start + 1)
  local order = band .. string.format('%015d', start) ..
                string.format('%015d', redis.call('INCR', 't2i:dispatch:seq')) .. ':' .. job
  redis.call('HSET', record, 'order', order, 'fair', fair, 'group', group, 'needs', needs, 'checkpoint', checkpoint)
  return place(job, stale_before)
end

-- A worker with `slots` slots: if one is free, the first job in the global order it can run; else it waits.
local pull
pull = function(worker, slots, now)
  if redis.call('SCARD', 't2i:assigned:' .. worker) >= slots then return false end
  if redis.call('EXISTS', 't2i:can:' .. worker) == 0 then return false end
  local best, best_group = nil, nil
  for _, group in ipairs(redis.call('SMEMBERS', 't2i:groups')) do
    local head = redis.call('ZRANGE', 't2i:group:' .. group, 0, 0)[1]
    if not head then
      redis.call('SREM', 't2i:groups', group)
      redis.call('DEL', 't2i:needs:' .. group)
    elseif (best == nil or head < best) and capable(worker, 't2i:needs:' .. group) then
      best, best_group = head, group
    end
  end
  if not best then
    local score = now + (slots > 1 and PIPELINING or 0)
    local current = redis.call('ZSCORE', 't2i:waiting', worker)
    if not current or (tonumber(current) >= PIPELINING) ~= (score >= PIPELINING) then
      redis.call('ZADD', 't2i:waiting', score, worker)
    end
    return false
  end
  local job = string.sub(best, 33)
  redis.call('ZREM', 't2i:queued', best)
  redis.call('ZREM', 't2i:group:' .. best_group, best)
  redis.call('HDEL', 't2i:order', job)
  redis.call('PUBLISH', 't2i:events:queue', job)
  if redis.call('HEXISTS', 'JOB_PREFIX' .. job, 'message_props') == 0 then
    return pull(worker, slots, now)  -- its record expired while it waited (RESULT_EXPIRES): nothing to run
  end
  hand(worker, job, 'JOB_PREFIX' .. job, best)
  return job
end
"""

# The message at the oldest end of a Celery queue's list, if it is still `raw`, becomes a job in the index.
# KEYS: list, record; ARGV: raw, job, band, client, group, needs, checkpoint, head, props, stale_before
_TAKE_IN = """
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return 'moved' end
redis.call('RPOP', KEYS[1])
return take_in(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
"""

# Many jobs' messages, built by their submitter (app/batch.py), taken in one after another, in order.
# ARGV: stale_before, then per job: job, band, client, group, needs, checkpoint, head, props. Returns each outcome.
_TAKE_IN_MANY = """
local outcomes = {}
for i = 2, #ARGV, 8 do
  table.insert(outcomes, take_in(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
                                 ARGV[i + 6], ARGV[i + 7], ARGV[1]))
end
return outcomes
"""

# A job handed back (its worker was lost, or stopped taking jobs): in its old place, unless it has ended, or is
# queued or running (leased) already. ARGV: job, the worker it leaves ('' for none), stale_before
_HAND_BACK = """
if ARGV[2] ~= '' then redis.call('SREM', 't2i:assigned:' .. ARGV[2], ARGV[1]) end
if ended(ARGV[1]) or redis.call('HEXISTS', 'JOB_PREFIX' .. ARGV[1], 'order') == 0 then return 'ended' end
if settled(ARGV[1]) then return 'settled' end
return place(ARGV[1], ARGV[3])
"""

# ARGV: worker, slots, now, the job that ended there ('' for none)
_PULL = """
if ARGV[4] ~= '' then redis.call('SREM', 't2i:assigned:' .. ARGV[1], ARGV[4]) end
return pull(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
"""

# A worker that stops taking jobs: out of the waiting workers; the jobs still in its queue are handed back.
# ARGV: worker, stale_before
_RECLAIM = """
redis.call('ZREM', 't2i:waiting', ARGV[1])
local queue, handed = 't2i.gpu.' .. ARGV[1], {}
for _, raw in ipairs(redis.call('LRANGE', queue, 0, -1)) do
  local ok, message = pcall(cjson.decode, raw)
  local job = ok and type(message) == 'table' and type(message['headers']) == 'table' and message['headers']['id']
  if type(job) == 'string' then
    redis.call('SREM', 't2i:assigned:' .. ARGV[1], job)
    if not ended(job) and redis.call('HEXISTS', 'JOB_PREFIX' .. job, 'order') == 1 and not settled(job) then
      place(job, ARGV[2])
      table.insert(handed, job)
    end
  end
end
redis.call('DEL', queue)
return handed
"""


def _script(body: str) -> str:
    return (_FUNCTIONS + body).replace("JOB_PREFIX", JOB_PREFIX).replace("LEASE_PREFIX", LEASE_PREFIX) \
        .replace("PIPELINING", "1e11")


class Dispatcher:
    def __init__(self, client: redis.Redis, fleet: Fleet):
        self.redis = client
        self.fleet = fleet
        self._take_in, self._take_in_many, self._hand_back, self._pull, self._reclaim = (
            client.register_script(_script(body))
            for body in (_TAKE_IN, _TAKE_IN_MANY, _HAND_BACK, _PULL, _RECLAIM))

    def take_in(self, queue_list: str, raw: bytes, entry: Entry) -> str:
        """Moves the message `raw`, if it is still the oldest of `queue_list`, into the index (or straight to a
        waiting worker). Returns "queued", "handed:<worker>", "ended" (a job that had ended: dropped) or "moved"
        (another process took it first), "settled" (a copy of a job queued or running: dropped)."""
        head, props = entry.message_parts()
        outcome = self._take_in(keys=[queue_list, job_key(entry.job_id)],
                                args=[raw, entry.job_id, entry.band, entry.client, entry.group,
                                      json.dumps(list(entry.needs)), entry.checkpoint, head, props,
                                      self.fleet.stale_before()])
        return outcome.decode()

    def take_in_many(self, entries: list[Entry], pipe: Any) -> None:
        """Queues in `pipe` the taking in of these jobs, new ones that were never in a Celery queue's list (a batch
        submit builds their messages itself: app/batch.py), in this order; each is what take_in does after it
        takes the message off the list. The pipe's results hold each chunk's outcomes."""
        stale_before = self.fleet.stale_before()
        for first in range(0, len(entries), TAKE_IN_CHUNK):
            args: list[Any] = [stale_before]
            for entry in entries[first:first + TAKE_IN_CHUNK]:
                head, props = entry.message_parts()
                args += [entry.job_id, entry.band, entry.client, entry.group, json.dumps(list(entry.needs)),
                         entry.checkpoint, head, props]
            self._take_in_many(args=args, client=pipe)

    def hand_back(self, job_id: str, worker: str = "", pipe: Any = None) -> Any:
        """The job goes back to its old place (or to a waiting worker), unless it has ended; with `pipe`, queued
        in that transaction."""
        return self._hand_back(keys=[job_key(job_id)], args=[job_id, worker, self.fleet.stale_before()],
                               client=pipe)

    def pull(self, worker: str, slots: int, ended: str = "") -> str | None:
        """A worker with `slots` slots (2 while pipelining): the id of the job handed to it, or None (it waits).
        ended: a job that has just ended on it, whose slot it frees."""
        job = self._pull(args=[worker, slots, time.time(), ended])
        return job.decode() if job else None

    def release(self, worker: str, job_id: str) -> None:
        """The job has ended on the worker (which takes no more jobs for now): its slot is free."""
        self.redis.srem(assigned_key(worker), job_id)

    def reclaim(self, worker: str) -> list[str]:
        """The worker takes no more jobs: the jobs in its queue are handed back. Returns their ids."""
        return [job.decode() for job in self._reclaim(args=[worker, self.fleet.stale_before()])]

    def stray(self, worker: str, held: set[str]) -> list[str]:
        """Hands back the jobs handed to `worker` that it does not hold (`held`) and that are not in its queue;
        returns their ids."""
        stray = self.unheld(worker, held)
        for job_id in stray:
            self.hand_back(job_id, worker)
        return stray

    def unheld(self, worker: str, held: set[str]) -> list[str]:
        """The jobs handed to `worker` that it does not hold (`held`) and that are not in its queue."""
        pipe = self.redis.pipeline()
        pipe.smembers(assigned_key(worker))
        pipe.lrange(worker_queue(worker), 0, -1)
        assigned, queued = pipe.execute()
        in_queue = {_job_of(raw) for raw in queued}
        return sorted({job.decode() for job in assigned} - held - in_queue)

    def assigned(self, worker: str) -> set[str]:
        return {job.decode() for job in self.redis.smembers(assigned_key(worker))}

    def forget_worker(self, worker: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(assigned_key(worker))
        pipe.srem(DISPATCHED_TO, worker)
        pipe.zrem(WAITING, worker)
        pipe.execute()

    def dispatched_to(self) -> list[str]:
        return sorted(worker.decode() for worker in self.redis.smembers(DISPATCHED_TO))

    def length(self) -> int:
        return int(self.redis.zcard(QUEUE_INDEX))
