"""Changes to the worker's consumer (its queues) made from other threads: kombu's consumer is not
thread-safe, so the change runs on the consumer's event loop (its hub), woken through `hub.call_soon`."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger("workers.eventloop")


def on_consumer_loop(consumer: Any, change: Callable[[], None], wait: float | None = None) -> None:
    """Run `change` on the consumer's loop; with `wait`, block up to that many seconds until it has run.
    A consumer without an event loop (eager tasks, unit tests) runs it here and now."""
    if consumer.hub is None:
        change()
        return
    if wait is None:
        consumer.hub.call_soon(change)
        return
    done = threading.Event()

    def run() -> None:
        try:
            change()
        finally:
            done.set()

    consumer.hub.call_soon(run)
    if not done.wait(wait):
        log.warning("the consumer's event loop did not run a change within %g s", wait)
