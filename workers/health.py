"""Keeps a GPU worker honest about its ComfyUI: checks /system_stats, heartbeats into Redis, and stops taking
jobs while its ComfyUI is down (resuming when it answers again) instead of failing them one by one. A job that
finds its ComfyUI unreachable stops the taking at once (`comfyui_unreachable`), before it is handed back. A ComfyUI
that did not stop a prompt it was asked to stop (`comfyui_stuck`) gets no more jobs until its queue is empty."""
from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from workers.comfyui import ComfyUIClient, ComfyUIError, RetryPolicy, Timeouts
from app.dispatch import worker_queue
from workers.eventloop import on_consumer_loop

log = logging.getLogger("workers.health")

CHANGE_TIMEOUT = 5.0  # seconds to wait for the consumer's loop to stop or resume taking jobs


def describe(stats: dict[str, Any]) -> str:
    system = stats.get("system", {}) if isinstance(stats.get("system"), dict) else {}
    devices = ", ".join(f"{d.get('name')} ({int(d.get('vram_total', 0)) // 2**20} MiB)"
                        for d in stats.get("devices", []) if isinstance(d, dict))
    return f"ComfyUI {system.get('comfyui_version', '?')}, devices: {devices or 'none listed'}"


class ComfyUIHealth(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.app = parent.app  # the worker's GPUWorkerApp (workers/gpu_app.py)
        settings = self.app.settings
        self.url = settings.worker_comfyui_url()
        self.interval = settings.worker_heartbeat
        self.queue = ""  # the worker's own queue, once the consumer has started (app/dispatch.py)
        self.client = ComfyUIClient(self.url, timeouts=Timeouts(connect=1.0, read=3.0),
                                    retry=RetryPolicy(attempts=1))
        self.stopped = threading.Event()
        self.consumer: Any = None
        self.consuming = True
        self.wanted = True
        self.stuck = False  # ComfyUI ignored an interrupt: healthy again only once its queue is empty
        self.hostname = ""

    def start(self, consumer: Any) -> None:
        # A consumer restarts (e.g. after Redis went away) with this same step: each start has its own loop.
        self.consumer, self.hostname, self.stopped = consumer, consumer.hostname, threading.Event()
        self.queue = worker_queue(consumer.hostname)
        if not self.check(first=True):
            self.wanted = False
            self._change_consuming(False)  # we are on the consumer's thread here
        self.app.comfyui_health = self
        threading.Thread(target=self.loop, args=(self.stopped,), name="comfyui-health", daemon=True).start()

    def stop(self, consumer: Any) -> None:
        self.stopped.set()
        try:
            self.app.fleet.gone(self.hostname)
        except Exception:  # Redis may be gone at shutdown; the heartbeat expires anyway
            log.debug("could not remove %s from the worker registry", self.hostname, exc_info=True)

    def check(self, first: bool = False) -> bool:
        try:
            stats = self.client.system_stats()
            healthy = not self.stuck or self._queue_emptied()
            if first:
                log.info("%s: %s answers: %s", self.hostname, self.url, describe(stats))
        except ComfyUIError as exc:
            healthy = False
            log.warning("%s: ComfyUI %s does not answer: %s", self.hostname, self.url, exc.reason)
        try:
            self.app.fleet.heartbeat(self.hostname, {"gpu": self.app.settings.gpu_index, "comfyui_url": self.url,
                                                     "healthy": healthy}, healthy, self.interval)
        except Exception as exc:
            log.warning("%s: heartbeat to Redis failed: %s", self.hostname, exc)
        return healthy

    def _queue_emptied(self) -> bool:
        queue = self.client.queue()
        if queue.running or queue.pending:
            log.warning("%s: ComfyUI %s still has %d running and %d pending prompt(s) after ignoring an interrupt",
                        self.hostname, self.url, len(queue.running), len(queue.pending))
            return False
        log.info("%s: ComfyUI %s has an empty queue again", self.hostname, self.url)
        self.stuck = False
        return True

    def loop(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.interval):
            healthy = self.check()
            if healthy != self.consuming:
                self.set_consuming(healthy)
            self.app.slots.reconcile()

    def set_consuming(self, consuming: bool) -> None:
        """From any thread but the consumer's: returns once the consumer has made the change. The loop may run
        two threads' changes out of order, so each applies the latest one asked for."""
        self.wanted = consuming
        on_consumer_loop(self.consumer, lambda: self._change_consuming(self.wanted), wait=CHANGE_TIMEOUT)

    def _change_consuming(self, consuming: bool) -> None:
        if consuming == self.consuming:
            return
        try:
            if consuming:
                self.consumer.add_task_queue(self.queue)
                self.app.slots.resume()
                log.info("%s: ComfyUI %s is back: taking jobs again", self.hostname, self.url)
            else:
                self.consumer.cancel_task_queue(self.queue)
                self.app.slots.pause()
                log.warning("%s: ComfyUI %s is down: not taking jobs until it answers", self.hostname, self.url)
        except Exception as exc:  # the next health check tries again
            log.warning("%s: could not change consuming to %s: %r", self.hostname, consuming, exc)
            return
        self.consuming = consuming


def comfyui_unreachable(step: ComfyUIHealth | None, url: str) -> None:
    """A job found its ComfyUI unreachable: stop taking jobs before the job is handed back to the queue, so that
    another GPU gets it rather than this one trying again (the health loop resumes once ComfyUI answers).
    step: the worker's running health step, if any."""
    if step is not None and step.url == url:
        step.set_consuming(False)


def comfyui_stuck(step: ComfyUIHealth | None) -> None:
    """ComfyUI did not stop a prompt when asked: take no more jobs until its queue is empty."""
    if step is not None:
        step.stuck = True
        step.set_consuming(False)
