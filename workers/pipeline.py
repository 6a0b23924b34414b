"""Prompt pipelining: a GPU worker takes its next job shortly before the current one ends, so the next prompt
is already waiting in ComfyUI's own queue and the GPU starts it about 1 ms after the current one finishes.

The worker runs two pool threads but asks the broker for one job at a time (prefetch 1). When the job it is
running is within `seconds` of its end (the sampler's ETA), that job opens a second slot (prefetch 2); the slot
closes when the job ends. So:
- a worker whose job has just started takes nothing more: a new job goes to an idle GPU, and a job never
  waits behind a long one on a busy GPU (at most `seconds` behind one that is about to end);
- idle workers have been waiting on the queue longer, so Redis hands them a new job first;
- the second job is an ordinary job: it records its assignment before it submits, follows its own prompt id
  on its own websocket, and is cancelled by deleting it from ComfyUI's queue.

QoS changes are made on the consumer's event loop (workers/eventloop.py), which owns kombu's QoS."""
from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from workers.eventloop import on_consumer_loop

log = logging.getLogger("workers.pipeline")


class Lookahead:
    """One per worker process. Without an attached consumer (eager tasks, unit tests) it changes nothing."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.opened_by: set[str] = set()
        self.consumer: Any = None
        self.applied = 0  # extra prefetch slots currently applied to the consumer's QoS

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def near_end(self, job_id: str) -> None:
        """The job `job_id` will end within `seconds`: take the next job now."""
        if not self.enabled:
            return
        with self.lock:
            if job_id in self.opened_by:
                return
            self.opened_by.add(job_id)
        log.debug("job %s is near its end: taking the next job", job_id)
        self._schedule()

    def ended(self, job_id: str) -> None:
        with self.lock:
            if job_id not in self.opened_by:
                return
            self.opened_by.discard(job_id)
        self._schedule()

    def attach(self, consumer: Any) -> None:
        """On consumer (re)start: its fresh QoS allows one job per pool thread; bring it down to one job, plus
        the slot a job still running may have opened."""
        with self.lock:
            self.consumer = consumer
            self.applied = 0
        consumer.qos.decrement_eventually(consumer.pool.num_processes - 1)
        self._apply()
        consumer.qos.update()

    def detach(self) -> None:
        with self.lock:
            self.consumer = None

    def _schedule(self) -> None:
        consumer = self.consumer
        if consumer is not None:
            on_consumer_loop(consumer, self._apply)

    def _apply(self) -> None:
        with self.lock:
            consumer = self.consumer
            if consumer is None:
                return
            wanted = min(1, len(self.opened_by))
            change, self.applied = wanted - self.applied, wanted
        if change > 0:
            consumer.qos.increment_eventually(change)
        elif change < 0:
            consumer.qos.decrement_eventually(-change)
        if change and consumer.hub is not None:
            # We are on the event loop's thread: apply it now, before this turn of the loop polls (the loop's own
            # check would wait for the poll to return, up to a second).
            consumer.qos.update()


class PipelineStep(bootsteps.StartStopStep):
    """Consumer bootstep that attaches the process's Lookahead to the consumer's QoS."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.lookahead = parent.app.lookahead  # the worker's GPUWorkerApp (workers/gpu_app.py)

    def start(self, consumer: Any) -> None:
        self.lookahead.attach(consumer)

    def stop(self, consumer: Any) -> None:
        self.lookahead.detach()
