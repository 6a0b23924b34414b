"""A per-process cache of job snapshots that Redis keeps correct, so that polling a running job costs no Redis
round trip while nothing about the job changes.

It is Redis's server-assisted client-side caching (CLIENT TRACKING in broadcasting mode, RESP2): Redis sends
the name of every key written under the snapshot's key prefixes to a subscriber connection, and the cache drops
that job's snapshot. A snapshot read while a write to its keys was on its way is not kept (each read holds a
token that an invalidation withdraws). While the subscriber is not connected nothing is cached, and everything
cached is dropped when it disconnects.

Every read first applies the invalidations already received. Redis sends a write's invalidation before it
runs the next command, so on one host a poll never misses a write that Redis had shown any reader before the
poll began; across hosts, the invalidation's network delay later. A process's own writes show at once if it
calls `forget`."""
from __future__ import annotations

import logging
import select
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
        self.lock = threading.Lock()  # guards everything below, and every read of the subscriber's socket
        self.entries: dict[str, T] = {}
        self.reading: dict[str, object] = {}  # job id -> token of the read whose result may be kept
        self.subscriber: Subscriber | None = None  # set while invalidations are arriving
        self.heard_at = 0.0  # when the subscriber last received anything
        self.stopped = threading.Event()
        threading.Thread(target=self._listen, name="snapshot-invalidations", daemon=True).start()

    @property
    def live(self) -> bool:
        return self.subscriber is not None

    def get(self, job_id: str, load: Callable[[], T], keep: Callable[[T], bool]) -> T:
        """The cached snapshot, or `load()`, kept for next time when `keep` says it may be."""
        token = object()
        with self.lock:
            self._catch_up()
            if job_id in self.entries:
                return self.entries[job_id]
            if self.subscriber is not None:
                self.reading[job_id] = token
        try:
            value = load()
        except BaseException:
            with self.lock:
                self._withdraw(job_id, token)
            raise
        with self.lock:
            self._catch_up()
            if self._withdraw(job_id, token) and keep(value):
                self._store(job_id, value)
        return value

    def forget(self, job_id: str) -> None:
        """This process wrote the job's keys: read them afresh next time."""
        with self.lock:
            self._drop([job_id])

    def wait_live(self, timeout: float) -> bool:
        """For callers that want the cache in use from their first read (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while not self.live and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.live

    def stop(self) -> None:
        self.stopped.set()

    def _withdraw(self, job_id: str, token: object) -> bool:
        """Lock held. Ends a read; whether its result may be kept (no invalidation withdrew its token)."""
        if self.reading.get(job_id) is not token:
            return False
        del self.reading[job_id]
        return True

    def _store(self, job_id: str, value: T) -> None:
        self.entries[job_id] = value
        if len(self.entries) > self.max_entries:
            del self.entries[next(iter(self.entries))]

    def _catch_up(self) -> None:
        """Apply the invalidations the subscriber has received (lock held). A failed connection stops caching;
        the listener reconnects."""
        if self.subscriber is None:
            return
        try:
            messages = self.subscriber.received()
        except (redis.RedisError, OSError):
            self._set_subscriber(None)
            return
        if messages:
            self.heard_at = time.monotonic()
        for message in messages:
            if message[0] == b"message":
                self._drop(self._job_ids(message[2]))

    def _drop(self, job_ids: list[str] | None) -> None:
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

    def _set_subscriber(self, subscriber: Subscriber | None) -> None:
        """Lock held. Without a subscriber nothing is cached: what was cached may have changed unnoticed."""
        self.subscriber = subscriber
        self.heard_at = time.monotonic()
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
            with self.lock:
                self._set_subscriber(subscriber)
            self._receive(subscriber, tracker)
        finally:
            with self.lock:
                if self.subscriber is subscriber:
                    self._set_subscriber(None)
            subscriber.close()
            tracker.close()

    def _receive(self, subscriber: Subscriber, tracker: redis.Redis) -> None:
        """Until a connection fails: apply invalidations as they arrive; PING both connections when quiet."""
        pinged_at: float | None = None
        while not self.stopped.is_set():
            if self.subscriber is not subscriber:
                raise redis.ConnectionError("the invalidation connection failed")
            if subscriber.wait(PING_EVERY):
                with self.lock:
                    self._catch_up()
                continue
            if pinged_at is not None and self.heard_at < pinged_at:
                raise redis.ConnectionError(f"no answer to PING within {PING_EVERY:g} s")
            pinged_at = time.monotonic()
            subscriber.send("PING")
            tracker.ping()


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
            self._call("AUTH", *[p for p in (params.get("username"), params["password"]) if p])
        self.client_id = self._call("CLIENT", "ID")
        self._call("SUBSCRIBE", CHANNEL)
        self.sock.setblocking(False)

    def send(self, *args: Any) -> None:
        parts = [str(arg).encode() for arg in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def wait(self, timeout: float) -> bool:
        """Whether something arrived within `timeout` seconds."""
        return bool(select.select([self.sock], [], [], timeout)[0])

    def received(self) -> list[Any]:
        """Every whole message received so far, without waiting."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            self.reader.feed(data)
        messages = []
        while (message := self.reader.gets()) is not False:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()

    def _call(self, *args: Any) -> Any:
        """While connecting (the socket still blocks, with a timeout): one command and its reply."""
        self.send(*args)
        while (reply := self.reader.gets()) is False:
            data = self.sock.recv(65536)
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            self.reader.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ConnectionError(f"{args[0]} failed: {reply}")
        return reply
