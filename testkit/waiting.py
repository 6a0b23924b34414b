"""The one way tests and benchmarks wait for something: poll a condition until it holds or time runs out."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Calls `check` every `interval` seconds until it returns something true or `timeout` seconds have passed;
    returns its last answer (true, or the false one it gave at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def eventually(check: Callable[[], T], timeout: float = 30.0, failure: Callable[[], str] | None = None,
               interval: float = 0.02) -> T:
    """Like `poll`, but an answer that is still false at the deadline fails: AssertionError with `failure()`."""
    value = poll(check, timeout, interval)
    if not value:
        raise AssertionError(failure() if failure else f"not true within {timeout}s: {check}")
    return value
