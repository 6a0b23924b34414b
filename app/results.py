"""Job states in Celery's Redis result backend, written so that a terminal state is final.

Every state write, Celery's own (STARTED, RETRY, the result after a task returns, a revoke) and the worker's
(PROGRESS, its terminal write), is one Lua script that:
- refuses to replace SUCCESS, FAILURE or REVOKED (Celery's own backend protects only SUCCESS, and only with a
  read-then-write);
- for a write made on behalf of an execution (`owner`), refuses unless that execution still holds the job's
  lease (app/leases.py): an execution that lost its lease can never write the job's state;
- on a STARTED write, stamps the job's record: `started_at` (its first start's), `worker` (the result's hostname),
  and the ComfyUI the execution will submit to, where no earlier execution's is there to resume (workers/start.py);
- on a PROGRESS write that first reaches one of the job's webhook progress milestones, queues that delivery in
  the webhook outbox (app/webhooks.py);
- on a terminal write, also takes the job out of the ready index, stamps `finished_at`, ends the lease, counts
  the end by state and template (app/counters.py) and queues the job's webhook delivery in the outbox; a REVOKED
  write also sets the job's cancel flag, which its execution watches to stop the prompt.

A cancel is such a REVOKED write (app/jobs.py): whatever it answers is final. If it answers CANCELLED, a SUCCESS
the worker tries to write later is refused and its images are never published; if the job had ended first, the
cancel changes nothing and answers that state.

So the first terminal write wins, and every reader (the API, the simple API's /status, `AsyncResult.get()`, Flower's
result lookups, the Python client) sees the same terminal state from the first moment any of them sees it."""
from __future__ import annotations

import time
from functools import cached_property
from typing import Any, Callable

import redis
from celery import states
from celery.backends.redis import RedisBackend

from app.connection import connect
from app.counters import ENDED
from app.leases import RUNNING, lease_key
from app.dispatch import ORDER, QUEUE_EVENTS
from app.records import cancel_key, job_key
from app.validation import is_job_id
from app.webhooks import OUTBOX

TERMINAL_STATES = frozenset((states.SUCCESS, states.FAILURE, states.REVOKED))
WRITTEN, TERMINAL, FENCED = "written", "terminal", "fenced"
QUEUED = "queued"  # the write waits in a transaction
# Set on a task's request once the task has made the job's terminal write, or found the job ended: Celery's own
# write of the task's outcome that follows is then not sent (the script would refuse it).
ENDED_BY_TASK = "job_ended"

_WRITE = """
local function store(key, value)
  if ARGV[4] == '0' then redis.call('SET', key, value) else redis.call('SET', key, value, 'EX', ARGV[4]) end
end
local function notify(webhook, state, event)
  redis.call('XADD', 'OUTBOX', '*', 'delivery_id', ARGV[5] .. ':' .. event, 'job_id', ARGV[5], 'url', webhook,
             'state', state, 'client', redis.call('HGET', KEYS[3], 'client') or '', 'first_at', ARGV[6],
             'attempt', '0')
end
-- The highest of the job's webhook progress milestones (ascending percents) that this write reaches first.
local function milestone(marks)
  local ok, meta = pcall(cjson.decode, ARGV[1])
  if not (ok and type(meta) == 'table' and type(meta['result']) == 'table'
          and type(meta['result']['progress']) == 'table') then return nil end
  local percent = tonumber(meta['result']['progress']['overall_percent'])
  local sent = tonumber(redis.call('HGET', KEYS[3], 'webhook_progress_sent') or '0')
  local reached = nil
  for mark in string.gmatch(marks, '%d+') do
    if percent and tonumber(mark) > sent and percent >= tonumber(mark) then reached = tonumber(mark) end
  end
  return reached
end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    local status = meta['status']
    if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then return 'terminal' end
  end
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then return 'fenced' end
store(KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
if ARGV[8] == 'STARTED' then
  redis.call('HSETNX', KEYS[3], 'started_at', ARGV[6])
  local ok, meta = pcall(cjson.decode, ARGV[1])
  local result = ok and type(meta) == 'table' and meta['result']
  if type(result) == 'table' and type(result['hostname']) == 'string' then
    redis.call('HSET', KEYS[3], 'worker', result['hostname'])
  end
  if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[3], ARGV[4]) end  -- kept from now on, however long it waited
  -- Where this execution will submit the prompt, unless an earlier execution's assignment is there to resume.
  if #ARGV > 8 and redis.call('HEXISTS', KEYS[3], 'comfyui_url') == 0 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 9))
  end
end
if ARGV[8] == 'PROGRESS' then
  local marks = redis.call('HGET', KEYS[3], 'webhook_progress')
  local reached = marks and milestone(marks)
  if reached then
    redis.call('HSET', KEYS[3], 'webhook_progress_sent', reached)
    notify(redis.call('HGET', KEYS[3], 'webhook_url'), 'PROGRESS', 'PROGRESS-' .. reached)
  end
end
if ARGV[2] == '1' then
  if ARGV[7] == '1' then store(KEYS[6], '1') end
  local order = redis.call('HGET', KEYS[4], ARGV[5])
  if order then
    redis.call('ZREM', 't2i:queued', order)
    redis.call('ZREM', 't2i:group:' .. (redis.call('HGET', KEYS[3], 'group') or ''), order)
    redis.call('HDEL', KEYS[4], ARGV[5])
    redis.call('PUBLISH', 'QUEUE_EVENTS', ARGV[5])  -- the positions behind it change (app/events.py)
  end
  redis.call('HSET', KEYS[3], 'finished_at', ARGV[6])
  redis.call('HDEL', KEYS[3], 'message_head', 'message_props', 'needs')  -- only dispatch reads them: 2 KB a job
  if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
  redis.call('HDEL', KEYS[5], ARGV[5])
  if ARGV[3] ~= '' then redis.call('DEL', KEYS[2]) end
  local state = ARGV[8] == 'REVOKED' and 'CANCELLED' or ARGV[8]
  local template = 'unknown'
  local ok, request = pcall(cjson.decode, redis.call('HGET', KEYS[3], 'request') or '')
  if ok and type(request) == 'table' then
    if type(request['template']) == 'string' then template = request['template']
    elseif request['workflow'] ~= nil then template = 'workflow' end
  end
  redis.call('HINCRBY', 'ENDED', state .. '|' .. template, 1)
  local webhook = redis.call('HGET', KEYS[3], 'webhook_url')
  if webhook then notify(webhook, state, state) end
end
return 'written'
"""


class GuardedRedisBackend(RedisBackend):
    """Celery's Redis result backend, with every state write made through the guarded script above."""

    def __init__(self, *args: Any, url: str | None = None, **kwargs: Any):
        # Named by class (app.backend_cls), the backend gets no URL: it is the configured result_backend.
        super().__init__(*args, url=url or kwargs["app"].conf.result_backend, **kwargs)

    def _params_from_url(self, url: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """Unused: the connection is made from the app's settings (below), whatever REDIS_URL's form."""
        return dict(defaults)

    @cached_property
    def client(self) -> Any:
        """This backend's own pool, made where every Redis connection is (app/connection.py): a redis://, rediss://
        (TLS) or sentinel:// REDIS_URL alike."""
        return connect(self.app.settings)

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Celery subscribes to a task's result channel as it sends the task, for an AsyncResult.get() that may
        follow, and unsubscribes when the AsyncResult is dropped: two commands on every submit, which the web tier
        never waits on. A get() subscribes when it is called, then reads the stored state
        (RedisBackend.on_wait_for_pending), so it misses nothing."""

    @cached_property
    def write_script(self) -> Any:
        return self.client.register_script(_WRITE.replace("OUTBOX", OUTBOX).replace("ENDED", ENDED)
                                            .replace("QUEUE_EVENTS", QUEUE_EVENTS))

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        if not is_job_id(task_id):  # not a job (a raw send_task with a made-up id): no job keys to keep
            return super()._store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        if state in TERMINAL_STATES and getattr(request, ENDED_BY_TASK, False):
            return result  # Celery's own write after the task's: the script would refuse it
        self.write(task_id, state, result, traceback=traceback, request=request)
        return result

    def write(self, task_id: str, state: str, result: Any, traceback: Any = None, request: Any = None,
              owner: str | None = None, pipe: Any = None) -> str:
        """Store a state; returns WRITTEN, TERMINAL (the job had ended: nothing written) or FENCED (`owner` no
        longer holds the job's lease: nothing written). With `pipe` (a transaction), the write is queued there."""
        keys, args = self._command(task_id, state, result, traceback, request, owner)
        if pipe is not None:
            self.write_script(keys=keys, args=args, client=pipe)
            return QUEUED
        return self.ensure(self._write, (keys, args))

    def write_later(self, task_id: str, state: str, result: Any, request: Any = None,
                    owner: str | None = None) -> Callable[[], str]:
        """write(), sent now; its outcome is read when the returned function is called, which the caller must do:
        the round trip overlaps whatever the caller does meanwhile. For a write that may be made twice (on NOSCRIPT
        or a lost connection it is made again, as write() does)."""
        keys, args = self._command(task_id, state, result, None, request, owner)
        pool = self.client.connection_pool
        connection = pool.get_connection()

        def again() -> str:
            return self.ensure(self._write, (keys, args))
        try:
            connection.send_command("EVALSHA", self.write_script.sha, len(keys), *keys, *args)
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            pool.release(connection)
            return again

        def outcome() -> str:
            try:
                reply = connection.read_response()
            except redis.exceptions.NoScriptError:
                reply = None
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                reply = None
            finally:
                pool.release(connection)
            if reply is None:
                return again()
            return reply.decode() if isinstance(reply, bytes) else str(reply)
        return outcome

    def queue_write(self, pipe: Any, task_id: str, state: str, result: Any, request: Any = None,
                    owner: str | None = None, assignment: dict[str, str] | None = None) -> None:
        """write(), queued in a pipeline that is not a transaction, by the script's SHA (whoever runs the pipeline
        loads `write_script` and runs it again on NOSCRIPT); its reply is the outcome, as bytes. assignment: with
        STARTED, fields written on the job's record if the write is made and the record names no ComfyUI yet."""
        keys, args = self._command(task_id, state, result, None, request, owner)
        fields = [part for field in (assignment or {}).items() for part in field]
        pipe.evalsha(self.write_script.sha, len(keys), *keys, *args, *fields)

    def _command(self, task_id: str, state: str, result: Any, traceback: Any, request: Any,
                 owner: str | None) -> tuple[list[str], list[Any]]:
        if isinstance(result, BaseException):
            result = self.prepare_exception(result)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = task_id
        expires = self.failure_expires if state == states.FAILURE else self.expires
        keys = [self.get_key_for_task(task_id), lease_key(task_id), job_key(task_id), ORDER, RUNNING,
                cancel_key(task_id)]
        args = [self.encode(meta), int(state in TERMINAL_STATES), owner or "", int(expires or 0), task_id, time.time(),
                int(state == states.REVOKED), state]
        return keys, args

    def _write(self, keys: list[str], args: list[Any]) -> str:
        outcome = self.write_script(keys=keys, args=args)
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

