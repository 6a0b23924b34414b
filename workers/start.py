"""An execution's start, in one round trip to Redis: the job's record kept (or made, for a task sent by name) and
its seed settled, its lease taken, its STARTED state written through that lease (which stamps the record's
`started_at` and `worker`, app/results.py, and where no earlier execution's assignment is there to resume, this
one's: the ComfyUI and client id it will submit the prompt under), and the record read back for the runner.

Each step is guarded on its own: the record's fields are set only where missing, and the STARTED write is refused
unless the lease was taken and the job has not ended. So the steps need not wait for each other's answers, and go
in one pipeline. Its scripts are called by their SHA: if Redis has lost them (a restart, a failover), they are
loaded and the whole start, whose every step can be made twice, is made again."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.states import STARTED
from redis.exceptions import NoScriptError, ResponseError

from app.leases import Lease
from app.records import job_key, parse_record
from app.request import JobRequest
from workers.gpu_app import GPUWorkerApp

ATTEMPTS = 3  # NOSCRIPT once is Redis having lost its scripts; again, a failover meanwhile


@dataclass(frozen=True)
class Start:
    seed: int | None  # the job's seed (the first one any execution offered); None if the request has none
    outcome: str  # the STARTED write's: WRITTEN, TERMINAL (the job had ended) or FENCED (the lease is another's)
    record: dict[str, Any]  # the job's record after the STARTED write: its started_at is final


def start(task: Task, request: JobRequest, lease: Lease, assignment: dict[str, str]) -> Start:
    app: GPUWorkerApp = task.app
    job_id = task.request.id
    delivery_tag = str((task.request.properties or {}).get("delivery_tag", ""))
    for _ in range(ATTEMPTS):
        pipe = app.redis.pipeline(transaction=False)
        settle = app.records.queue_ensure_record(pipe, job_id, request.to_dict(), request.seed)
        lease.queue_acquire(pipe, delivery_tag)
        app.backend.queue_write(pipe, job_id, STARTED, {"hostname": task.request.hostname, "pid": os.getpid()},
                                request=task.request, owner=lease.owner, assignment=assignment)
        pipe.hgetall(job_key(job_id))
        replies = pipe.execute(raise_on_error=False)
        seed = settle(replies)  # at every attempt: the one whose commands made the record finishes it
        if not any(isinstance(reply, NoScriptError) for reply in replies):
            break
        for script in (*lease.scripts, app.backend.write_script):
            app.redis.script_load(script.script)
    error = next((reply for reply in replies if isinstance(reply, ResponseError)), None)
    if error is not None:
        raise error
    *_, outcome, record = replies
    return Start(seed, outcome.decode(), parse_record(record))
