"""A GPU worker's slots: when it asks the dispatcher (app/dispatch.py) for a job.

A worker has one slot: it runs one job at a time. With prompt pipelining (PIPELINE_LOOKAHEAD seconds) it opens a
second slot when its job is within that many seconds of its end (the sampler's ETA, or saving its images), so the
next prompt already waits in ComfyUI's own queue and the GPU starts it about 1 ms after the current one ends; the
slot closes when the job ends. So:
- a worker whose job has just started takes nothing more: a new job goes to an idle GPU, and a job never waits
  behind a long one on a busy GPU (at most PIPELINE_LOOKAHEAD seconds behind one that is about to end);
- a new job goes to an idle GPU before a pipelining one (the dispatcher ranks them so);
- the second job is an ordinary job: it records its assignment before it submits, follows its own prompt id on
  its own websocket, and is cancelled by deleting it from ComfyUI's queue.

The worker asks when it starts, when its GPU's capabilities are published, when a job ends (Celery's task_postrun,
or task_revoked for one dropped before it ran), when a slot opens, when its ComfyUI answers again, and at each
heartbeat. It stops asking while its ComfyUI is down; the jobs then waiting in its own queue are handed back."""
from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import bootsteps
from celery.signals import task_postrun, task_revoked
from celery.worker import state as worker_state

from app.dispatch import Dispatcher

log = logging.getLogger("workers.slots")


class Slots:
    """One per worker process. Until its consumer starts (eager tasks, unit tests) it asks for nothing."""

    def __init__(self, dispatcher: Dispatcher, lookahead: float):
        self.dispatcher = dispatcher
        self.lookahead = lookahead
        self.lock = threading.Lock()
        self.opened_by: set[str] = set()
        self.worker: str | None = None
        self.paused = False
        self.suspects: set[str] = set()  # jobs the last reconcile found handed here but not held

    def start(self, worker: str) -> None:
        """A new consumer: what an earlier run of this worker left in its queue, or was handed and never started,
        goes back first."""
        self.worker = worker
        self.reconcile(at_start=True)

    def stop(self) -> None:
        if self.worker is not None:
            self._hand_back_queued()
        self.worker = None

    def pause(self) -> None:
        """Its ComfyUI is down: no more jobs, and the ones waiting in its queue go back."""
        self.paused = True
        if self.worker is not None:
            self._hand_back_queued()

    def resume(self) -> None:
        self.paused = False
        self.ask()

    def near_end(self, job_id: str) -> None:
        """The job `job_id` will end within PIPELINE_LOOKAHEAD seconds: open the second slot."""
        if self.lookahead <= 0:
            return
        with self.lock:
            if job_id in self.opened_by:
                return
            self.opened_by.add(job_id)
        log.debug("job %s is near its end: taking the next job", job_id)
        self.ask()

    def ended(self, job_id: str) -> None:
        with self.lock:
            self.opened_by.discard(job_id)
        self.ask(ended=job_id)

    def count(self) -> int:
        with self.lock:
            return 1 + min(1, len(self.opened_by))

    def ask(self, ended: str = "") -> None:
        worker = self.worker
        if worker is None:
            return
        try:
            if not self.paused:
                job = self.dispatcher.pull(worker, self.count(), ended)
                if job:
                    log.debug("%s: handed job %s", worker, job)
            elif ended:
                self.dispatcher.release(worker, ended)
        except (redis.RedisError, OSError) as exc:  # the next job's end, or the heartbeat's reconcile, asks again
            log.warning("%s: could not ask for a job: %s", worker, exc)

    def reconcile(self, at_start: bool = False) -> None:
        """A job handed to this worker that it neither holds (received, running) nor has in its queue went astray
        (a lost message, a missed end): it goes back, so that it cannot keep a slot taken for ever. A message on
        its way from the queue to the consumer is in neither for a moment: a job goes back once two looks in a
        row (an interval apart) have found it so, or at the consumer's start, before it takes any message."""
        if self.worker is None:
            return
        unheld = set(self.dispatcher.unheld(self.worker, held_jobs()))
        astray = unheld if at_start else unheld & self.suspects
        for job_id in sorted(astray):
            self.dispatcher.hand_back(job_id, self.worker)
            log.warning("%s: job %s was handed to it but never arrived or never ended here; handed back",
                        self.worker, job_id)
        self.suspects = unheld - astray
        self.ask()

    def _hand_back_queued(self) -> None:
        handed = self.dispatcher.reclaim(self.worker or "")
        if handed:
            log.info("%s: handed back %d job(s) from its queue: %s", self.worker, len(handed), ", ".join(handed))


def held_jobs() -> set[str]:
    """The jobs this worker process has received and not yet finished (Celery's worker state)."""
    return {request.id for request in (*worker_state.reserved_requests, *worker_state.active_requests)}


def executions_of(job_id: str) -> int:
    """How many executions of the job this worker process runs now (Celery's worker state)."""
    return sum(1 for request in worker_state.active_requests if request.id == job_id)


class SlotsStep(bootsteps.StartStopStep):
    """Consumer bootstep: asks for jobs when the consumer starts, and whenever a job ends."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.app = parent.app  # the worker's GPUWorkerApp (workers/gpu_app.py)

    def start(self, consumer: Any) -> None:
        task_postrun.connect(self._postrun, weak=False)
        task_revoked.connect(self._revoked, weak=False)
        self.app.slots.start(consumer.hostname)

    def stop(self, consumer: Any) -> None:
        task_postrun.disconnect(self._postrun)
        task_revoked.disconnect(self._revoked)
        self.app.slots.stop()

    def _postrun(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        # A copy of a job that steps aside while the job itself runs here (a redelivery) frees no slot.
        if task is not None and task.app is self.app and task_id and executions_of(task_id) <= 1:
            self.app.slots.ended(task_id)

    def _revoked(self, request: Any = None, **_: Any) -> None:
        if request is not None and request.id:
            self.app.slots.ended(request.id)
