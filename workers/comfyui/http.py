"""HTTP to one ComfyUI: timeouts on every call, capped exponential backoff on connection errors and 5xx."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import requests

from workers.comfyui.errors import ComfyUIHTTPError, ComfyUIProtocolError, ComfyUIUnavailable

log = logging.getLogger("workers.comfyui.http")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full-jitter backoff: attempt 0 waits up to base_delay, doubling up to max_delay."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.05
    read: float = 30.0


class HTTPTransport:
    def __init__(self, base_url: str, timeouts: Timeouts = Timeouts(), retry: RetryPolicy = RetryPolicy(),
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self.retry = retry
        self.session = session or requests.Session()

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> requests.Response:
        """One call; 4xx raise ComfyUIHTTPError at once, connection errors and 5xx are retried."""
        attempts = self.retry.attempts if retry else 1
        kwargs.setdefault("timeout", (self.timeouts.connect, self.timeouts.read))
        cause = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1))
            try:
                response = self.session.request(method, self.base_url + path, **kwargs)
            except requests.RequestException as exc:
                cause = f"{type(exc).__name__}: {exc}"
                log.warning("%s %s%s failed (attempt %d/%d): %s", method, self.base_url, path, attempt + 1, attempts, cause)
                continue
            if response.status_code >= 500:
                cause = f"HTTP {response.status_code}: {response.text[:200]}"
                log.warning("%s %s%s answered %s (attempt %d/%d)", method, self.base_url, path,
                            response.status_code, attempt + 1, attempts)
                continue
            if response.status_code >= 400:
                raise ComfyUIHTTPError(self.base_url, response.status_code,
                                       f"{method} {path} answered {response.status_code}: {response.text[:300]}",
                                       response.text)
            return response
        raise ComfyUIUnavailable(self.base_url, f"{method} {path} failed after {attempts} attempt(s): {cause}")

    def json(self, method: str, path: str, expect: type = dict, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ComfyUIProtocolError(self.base_url, f"{method} {path} answered non-JSON: {response.text[:200]!r}")
        if not isinstance(body, expect):
            raise ComfyUIProtocolError(self.base_url, f"{method} {path} answered {type(body).__name__}, "
                                                      f"expected {expect.__name__}")
        return body
