"""A job's task events (Task.send_event: task-progress at every progress write, task-retried, task-revoked), sent
through one dispatcher per thread that the worker keeps. Celery's own default_dispatcher takes a producer from the
pool and builds a dispatcher, a producer object and an exchange for every event: a quarter of an event's CPU."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher


class KeptDispatchers(Events):
    """The worker app's `events` (workers/gpu_app.py)."""

    def __init__(self, app: Any = None):
        super().__init__(app)
        self.kept = threading.local()  # hostname -> the dispatcher of this thread

    @contextmanager
    def default_dispatcher(self, hostname: str | None = None, enabled: bool = True,
                           buffer_while_offline: bool = False) -> Iterator[EventDispatcher]:
        if enabled and not buffer_while_offline:
            yield self._kept(hostname)
            return
        with super().default_dispatcher(hostname, enabled, buffer_while_offline) as dispatcher:
            yield dispatcher

    def _kept(self, hostname: str | None) -> EventDispatcher:
        dispatchers = self.kept.__dict__.setdefault("by_hostname", {})
        if hostname not in dispatchers:
            # The producer (and its connection) stays with this thread: the worker's few pool threads hold one each.
            producer = self.app.amqp.producer_pool.acquire(block=True)
            dispatchers[hostname] = self.Dispatcher(producer.connection, hostname, True, producer.channel)
        return dispatchers[hostname]
