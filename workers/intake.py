"""Consumer bootstep: every GPU worker takes jobs sent by anything else than the web tier and the Python client
(plain Celery by task name, a retry) from the Celery queue into the ready index, a few times a second
(app/intake.py)."""
from __future__ import annotations

import threading
from typing import Any

from app.intake import take_in_forever
from workers.thread_step import ThreadStep


class IntakeStep(ThreadStep):
    thread_name = "intake"

    def loop(self, app: Any, name: str, stopped: threading.Event) -> None:
        take_in_forever(app.intake, name, stopped)
