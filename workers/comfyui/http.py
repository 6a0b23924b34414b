"""HTTP to one ComfyUI: timeouts on every call, capped exponential backoff on connection errors and 5xx."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import requests
import urllib3

from workers.comfyui.errors import ComfyUIHTTPError, ComfyUIProtocolError, ComfyUIUnavailable

log = logging.getLogger("workers.comfyui.http")

T = TypeVar("T")


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


def environment_settled(session: requests.Session, url: str) -> requests.Session:
    """`session` with the environment's settings for `url` (proxies, CA bundle, .netrc credentials) read now, once.
    Left to requests they are read again at every request: scanning the whole environment for proxies is a third of
    a small request's CPU. Every request of a transport goes to the same host, so they are the same for all."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies, session.verify = settings["proxies"], settings["verify"]
    session.auth = session.auth or requests.utils.get_netrc_auth(url)
    session.trust_env = False
    return session


KEPT_SESSIONS = 4  # per thread: a worker talks to its own ComfyUI, and now and then to another one's
_kept = threading.local()


def kept_session(base_url: str) -> requests.Session:
    """This thread's session for `base_url`, kept for every client of that ComfyUI the thread makes: its
    connection stays open (keep-alive) from one job to the next, so a job's first call does not wait for a TCP
    connect. One per thread, as a requests Session is not meant to be shared between threads; the least recently
    used is closed beyond KEPT_SESSIONS."""
    sessions: OrderedDict[str, requests.Session] = _kept.__dict__.setdefault("sessions", OrderedDict())
    if base_url in sessions:
        sessions.move_to_end(base_url)
    else:
        sessions[base_url] = environment_settled(requests.Session(), base_url)
        if len(sessions) > KEPT_SESSIONS:
            sessions.popitem(last=False)[1].close()
    return sessions[base_url]


class HTTPTransport:
    def __init__(self, base_url: str, timeouts: Timeouts = Timeouts(), retry: RetryPolicy = RetryPolicy(),
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self.retry = retry
        self._session = session

    @property
    def session(self) -> requests.Session:
        """The session given, else the calling thread's (a client made in one thread may be used in another)."""
        return self._session or kept_session(self.base_url)

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> requests.Response:
        """One call; 4xx raise ComfyUIHTTPError at once, connection errors and 5xx are retried."""
        return self._retried(method, path, retry, kwargs, lambda response: response)

    def content(self, path: str, **kwargs: Any) -> bytes:
        """GET `path` and its whole body, retried as `request` (a body cut short too). The body is read in one
        call: requests' `.content` reads it 10 kB at a time, three times the CPU for a 1 MB image."""
        return self._retried("GET", path, True, {**kwargs, "stream": True},
                             lambda response: response.raw.read(decode_content=True))

    def _retried(self, method: str, path: str, retry: bool, kwargs: dict[str, Any],
                 read: Callable[[requests.Response], T]) -> T:
        attempts = self.retry.attempts if retry else 1
        kwargs.setdefault("timeout", (self.timeouts.connect, self.timeouts.read))
        cause = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1))
            try:
                response = self.session.request(method, self.base_url + path, **kwargs)
                if response.status_code < 500:
                    return read(self._accepted(method, path, response))
                cause = f"HTTP {response.status_code}: {response.text[:200]}"
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                cause = f"{type(exc).__name__}: {exc}"
                log.warning("%s %s%s failed (attempt %d/%d): %s", method, self.base_url, path, attempt + 1, attempts, cause)
                continue
            log.warning("%s %s%s answered %s (attempt %d/%d)", method, self.base_url, path,
                        response.status_code, attempt + 1, attempts)
        raise ComfyUIUnavailable(self.base_url, f"{method} {path} failed after {attempts} attempt(s): {cause}")

    def _accepted(self, method: str, path: str, response: requests.Response) -> requests.Response:
        """The response, unless it is an error answer (4xx): ComfyUIHTTPError, not retried."""
        if response.status_code >= 400:
            raise ComfyUIHTTPError(self.base_url, response.status_code,
                                   f"{method} {path} answered {response.status_code}: {response.text[:300]}",
                                   response.text)
        return response

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
