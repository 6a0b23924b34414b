"""A consumer bootstep that runs a loop in a daemon thread of its own while the worker's consumer runs (the
reaper, the intake, the webhook sender): `loop(app, worker name, stopped)` returns once `stopped` is set."""
from __future__ import annotations

import threading
from typing import Any

from celery import bootsteps


class ThreadStep(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}
    thread_name = "loop"

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()

    def loop(self, app: Any, name: str, stopped: threading.Event) -> None:
        raise NotImplementedError

    def start(self, consumer: Any) -> None:
        self.stopped = threading.Event()  # a consumer restarts with this same step: each start has its own
        threading.Thread(target=self.loop, name=self.thread_name, daemon=True,
                         args=(consumer.app, consumer.hostname, self.stopped)).start()

    def stop(self, consumer: Any) -> None:
        self.stopped.set()
