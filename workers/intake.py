"""Consumer bootstep: every GPU worker takes jobs sent by anything else than the web tier and the Python client
(plain Celery by task name, a retry) from the Celery queue into the ready index, a few times a second
(app/intake.py)."""
from __future__ import annotations

import threading
from typing import Any

from celery import bootsteps

from app.intake import take_in_forever


class IntakeStep(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()

    def start(self, consumer: Any) -> None:
        self.stopped = threading.Event()
        threading.Thread(target=take_in_forever, name="intake", daemon=True,
                         args=(consumer.app.intake, consumer.hostname, self.stopped)).start()

    def stop(self, consumer: Any) -> None:
        self.stopped.set()
