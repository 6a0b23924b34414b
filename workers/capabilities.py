"""Publishing what this worker's GPU can run: the worker reads its ComfyUI's `/object_info` when it starts and
every CAPABILITIES_INTERVAL seconds (ComfyUI lists new model files without a restart), and writes the node classes
and model files it found into Redis (app/fleet.py), where `GET /readyz`, `text2img workers` and routing read them.

It runs in a thread of its own: on a ComfyUI with many custom nodes, `/object_info` can take seconds, which must
not delay the heartbeat."""
from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from app.capabilities import Capabilities
from workers.comfyui import ComfyUIClient, ComfyUIError, RetryPolicy, Timeouts

log = logging.getLogger("workers.capabilities")

READ_TIMEOUT = 30.0


class CapabilitiesStep(bootsteps.StartStopStep):
    """Consumer bootstep: the thread that keeps this GPU's capabilities published."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.app = parent.app  # the worker's GPUWorkerApp (workers/gpu_app.py)
        self.url = self.app.settings.worker_comfyui_url()
        self.client = ComfyUIClient(self.url, timeouts=Timeouts(connect=1.0, read=READ_TIMEOUT),
                                    retry=RetryPolicy(attempts=1))
        self.stopped = threading.Event()

    def start(self, consumer: Any) -> None:
        self.stopped = threading.Event()
        threading.Thread(target=self.loop, args=(consumer.hostname, self.stopped), name="capabilities",
                         daemon=True).start()

    def stop(self, consumer: Any) -> None:
        self.stopped.set()

    def loop(self, worker: str, stopped: threading.Event) -> None:
        """Publish now, then every interval; after a failure, try again at the next heartbeat."""
        settings = self.app.settings
        while True:
            wait = settings.capabilities_interval if self.publish(worker) else settings.worker_heartbeat
            if stopped.wait(wait):
                return

    def publish(self, worker: str) -> bool:
        try:
            capabilities = Capabilities.from_object_info(self.client.object_info())
            # Outlives two missed refreshes, so that a slow ComfyUI does not make the GPU look empty.
            self.app.fleet.publish_capabilities(worker, capabilities, 3 * self.app.settings.capabilities_interval)
        except ComfyUIError as exc:
            log.warning("%s: could not read what ComfyUI %s offers: %s", worker, self.url, exc.reason)
            return False
        except Exception as exc:  # Redis away: the next turn tries again
            log.warning("%s: could not publish what ComfyUI %s offers: %r", worker, self.url, exc)
            return False
        log.info("%s: ComfyUI %s offers %d node classes and %s", worker, self.url, len(capabilities.node_classes),
                 ", ".join(f"{len(names)} {folder}" for folder, names in capabilities.models.items()))
        self.app.slots.ask()  # jobs it could not run before may be waiting
        return True
