"""A per-process cache of job snapshots that Redis keeps correct, so that polling a running job costs no Redis
round trip while nothing about the job changes.

It is Redis's server-assisted client-side caching (CLIENT TRACKING in broadcasting mode, RESP2): Redis sends
the name of every key written under the snapshot's key prefixes to a subscriber connection, and the cache drops
that job's snapshot. A snapshot read while a write to its keys was on its way is not kept (each read holds a
token that an invalidation withdraws). While the subscriber is not connected nothing is cached, and everything
cached is dropped when it disconnects.

Other processes' writes show after the invalidation reaches this one (well under a millisecond on one host);
a process's own writes show at once if it calls `forget`."""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Generic, TypeVar

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

log = logging.getLogger("app.snapshot_cache")

T = TypeVar("T")
CHANNEL = "__redis__:invalidate"
PING_EVERY = 1.0  # seconds of silence before the subscriber checks its connection
RECONNECT_DELAY = 0.5
CONNECT_TIMEOUT = 5.0
MAX_ENTRIES = 2_000  # snapshots of about 2 KB: a few MB per web process


class TrackingUnsupported(Exception):
    pass


class SnapshotCache(Generic[T]):
    def __init__(self, url: str, prefixes: tuple[str, ...], max_entries: int = MAX_ENTRIES):
        self.url = url
        self.prefixes = prefixes
        self.max_entries = max_entries
        self.lock = threading.Lock()
        self.entries: dict[str, T] = {}
        self.reading: dict[str, object] = {}  # job id -> token of the read whose result may be kept
        self.live = False  # invalidations are arriving
        self.stopped = threading.Event()
        threading.Thread(target=self._listen, name="snapshot-invalidations", daemon=True).start()

    def get(self, job_id: str, load: Callable[[], T], keep: Callable[[T], bool]) -> T:
        """The cached snapshot, or `load()`, kept for next time when `keep` says it may be."""
        token = object()
        with self.lock:
            if job_id in self.entries:
                return self.entries[job_id]
            if self.live:
                self.reading[job_id] = token
        value = load()
        with self.lock:
            if self.reading.get(job_id) is token:
                del self.reading[job_id]
                if keep(value):
                    self._store(job_id, value)
        return value

    def forget(self, job_id: str) -> None:
        """This process wrote the job's keys: read them afresh next time."""
        self._drop([job_id])

    def wait_live(self, timeout: float) -> bool:
        """For callers that want the cache in use from their first read (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while not self.live and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.live

    def stop(self) -> None:
        self.stopped.set()

    def _store(self, job_id: str, value: T) -> None:
        self.entries[job_id] = value
        if len(self.entries) > self.max_entries:
            del self.entries[next(iter(self.entries))]

    def _drop(self, job_ids: list[str] | None) -> None:
        with self.lock:
            if job_ids is None:
                self.entries.clear()
                self.reading.clear()
                return
            for job_id in job_ids:
                self.entries.pop(job_id, None)
                self.reading.pop(job_id, None)

    def _job_ids(self, keys: list[bytes] | None) -> list[str] | None:
        if keys is None:  # FLUSHALL / FLUSHDB
            return None
        ids = []
        for key in keys:
            name = key.decode()
            ids += [name[len(prefix):] for prefix in self.prefixes if name.startswith(prefix)]
        return ids

    def _set_live(self, live: bool) -> None:
        with self.lock:
            self.live = live
            if not live:
                self.entries.clear()
                self.reading.clear()

    def _listen(self) -> None:
        while not self.stopped.is_set():
            try:
                self._follow_invalidations()
            except TrackingUnsupported as exc:
                log.warning("Redis at %s cannot track keys (%s): job statuses are read from Redis every time",
                            self.url, exc)
                return
            except (redis.RedisError, OSError) as exc:
                log.warning("status cache: invalidations from %s lost (%s); reading Redis directly until they are "
                            "back", self.url, exc)
            finally:
                self._set_live(False)
            self.stopped.wait(RECONNECT_DELAY)

    def _follow_invalidations(self) -> None:
        subscriber = Subscriber(self.url)
        # No retries: a reconnected connection would have missed invalidations meanwhile; we start over instead.
        tracker = redis.Redis.from_url(self.url, single_connection_client=True, retry=Retry(NoBackoff(), 0))
        try:
            prefixes = [arg for prefix in self.prefixes for arg in ("PREFIX", prefix)]
            try:
                tracker.execute_command("CLIENT TRACKING", "ON", "REDIRECT", subscriber.client_id, "BCAST", *prefixes)
            except redis.ResponseError as exc:
                raise TrackingUnsupported(str(exc)) from exc
            self._set_live(True)
            self._receive(subscriber, tracker)
        finally:
            subscriber.close()
            tracker.close()

    def _receive(self, subscriber: Subscriber, tracker: redis.Redis) -> None:
        """Until a connection fails: drop what each invalidation names; PING both connections when quiet."""
        awaiting_pong = False
        while not self.stopped.is_set():
            message = subscriber.next(timeout=PING_EVERY)
            if message is None:
                if awaiting_pong:
                    raise redis.ConnectionError(f"no answer to PING within {PING_EVERY:g} s")
                subscriber.send("PING")
                tracker.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False
            if message[0] == b"message":
                self._drop(self._job_ids(message[2]))


class Subscriber:
    """The connection that receives invalidations, read with hiredis's reader. (redis-py 8.1's pub/sub reader
    hands back None for RESP2 invalidation messages, whose payload is a list of keys.)"""

    def __init__(self, url: str):
        params = parse_url(url)
        if "host" not in params or url.startswith("rediss:"):
            raise TrackingUnsupported("the status cache needs a plain TCP connection to Redis")
        self.sock = socket.create_connection((params["host"], params.get("port", 6379)), timeout=CONNECT_TIMEOUT)
        self.reader = hiredis.Reader()
        if params.get("password"):
            self.call("AUTH", *[p for p in (params.get("username"), params["password"]) if p])
        self.client_id = self.call("CLIENT", "ID")
        self.call("SUBSCRIBE", CHANNEL)

    def send(self, *args: Any) -> None:
        parts = [str(arg).encode() for arg in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def call(self, *args: Any) -> Any:
        self.send(*args)
        reply = self.next(timeout=CONNECT_TIMEOUT)
        if reply is None or isinstance(reply, hiredis.ReplyError):
            raise redis.ConnectionError(f"{args[0]} failed: {reply or 'no reply'}")
        return reply

    def next(self, timeout: float) -> Any:
        """The next message, or None if none came within `timeout` seconds."""
        while (reply := self.reader.gets()) is False:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            self.reader.feed(data)
        return reply

    def close(self) -> None:
        self.sock.close()
