"""The GPU worker's pool: Celery's threads pool, whose jobs are cancelled rather than killed.

A revoke with terminate (Flower's Terminate, `celery control revoke --terminate`) asks the pool to kill the job's
process; a thread cannot be killed (Celery's threads pool raises NotImplementedError, logged as a traceback).
Here it is a no-op: the revoke has put the job's id in the worker's revoked set, which the job's runner watches
(workers/runner.py), so the job is cancelled as DELETE /api/jobs/<id> cancels it: its prompt interrupted, the job
CANCELLED."""
from __future__ import annotations

import logging
from typing import Any

from celery.concurrency.thread import TaskPool

log = logging.getLogger("workers.pool")


class GPUThreadPool(TaskPool):
    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        log.info("terminate asked (signal %s): the revoked job's runner cancels its prompt", signal)
