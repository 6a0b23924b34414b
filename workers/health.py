"""Keeps a GPU worker honest about its ComfyUI: checks /system_stats, heartbeats into Redis, and stops taking
jobs while its ComfyUI is down (resuming when it answers again) instead of failing them one by one."""
from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from app import registry
from app.celery_app import celery
from workers.comfyui import ComfyUIClient, ComfyUIError, RetryPolicy, Timeouts

log = logging.getLogger("workers.health")


def describe(stats: dict[str, Any]) -> str:
    system = stats.get("system", {}) if isinstance(stats.get("system"), dict) else {}
    devices = ", ".join(f"{d.get('name')} ({int(d.get('vram_total', 0)) // 2**20} MiB)"
                        for d in stats.get("devices", []) if isinstance(d, dict))
    return f"ComfyUI {system.get('comfyui_version', '?')}, devices: {devices or 'none listed'}"


class ComfyUIHealth(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        conf = celery.conf
        self.url = conf.text2img_comfyui_url
        self.interval = float(conf.text2img_worker_heartbeat)
        self.queue = conf.task_default_queue
        self.client = ComfyUIClient(self.url, timeouts=Timeouts(connect=1.0, read=3.0),
                                    retry=RetryPolicy(attempts=1))
        self.stopped = threading.Event()
        self.consuming = True
        self.hostname = ""

    def start(self, consumer: Any) -> None:
        self.hostname = consumer.hostname
        healthy = self.check(first=True)
        if not healthy:
            self.set_consuming(False)
        threading.Thread(target=self.loop, name="comfyui-health", daemon=True).start()

    def stop(self, consumer: Any) -> None:
        self.stopped.set()
        try:
            registry.worker_gone(self.hostname)
        except Exception:  # Redis may be gone at shutdown; the heartbeat expires anyway
            log.debug("could not remove %s from the worker registry", self.hostname, exc_info=True)

    def check(self, first: bool = False) -> bool:
        try:
            stats = self.client.system_stats()
            healthy = True
            if first:
                log.info("%s: %s answers: %s", self.hostname, self.url, describe(stats))
        except ComfyUIError as exc:
            healthy = False
            log.warning("%s: ComfyUI %s does not answer: %s", self.hostname, self.url, exc.reason)
        try:
            registry.heartbeat(self.hostname, {"gpu": celery.conf.text2img_gpu, "comfyui_url": self.url,
                                               "healthy": healthy}, healthy, self.interval)
        except Exception as exc:
            log.warning("%s: heartbeat to Redis failed: %s", self.hostname, exc)
        return healthy

    def loop(self) -> None:
        while not self.stopped.wait(self.interval):
            healthy = self.check()
            if healthy != self.consuming:
                self.set_consuming(healthy)

    def set_consuming(self, consuming: bool) -> None:
        """Through the worker's own control channel, so the consumer thread does the change."""
        try:
            if consuming:
                celery.control.add_consumer(self.queue, destination=[self.hostname], reply=False)
                log.info("%s: ComfyUI %s is back: taking jobs again", self.hostname, self.url)
            else:
                celery.control.cancel_consumer(self.queue, destination=[self.hostname], reply=False)
                log.warning("%s: ComfyUI %s is down: not taking jobs until it answers", self.hostname, self.url)
            self.consuming = consuming
        except Exception as exc:
            log.warning("%s: could not change consuming to %s: %s", self.hostname, consuming, exc)
