"""A per-process cache of job snapshots that Redis keeps correct, so that polling a running job costs no Redis
round trip while nothing about the job changes.

It is Redis's server-assisted client-side caching (CLIENT TRACKING in broadcasting mode, RESP2): one connection
asks Redis to send it the name of every key written under the snapshot's key prefixes, and subscribes to those
notifications itself; the cache drops the snapshot of each job named. So the connection that tracks and the one
that hears are the same: if it dies, both stop together and the cache knows.

- A snapshot read while a write to its keys was on its way is not kept: an invalidation withdraws the read.
- One read at a time per job: a poll that finds a read of its job in flight (one that no invalidation has
  withdrawn yet) waits for that read's snapshot instead of reading again, if the snapshot may be kept. Otherwise
  each of the many pollers of a running job would read it again after each of its changes, and each read begun
  while another was in flight would keep the other's result out of the cache.
- Every read first applies the invalidations already received (a cached snapshot is answered without the lock
  when none is waiting on the socket). Redis writes a write's invalidations out before it processes any later
  command, so with Redis on the same host a poll never misses a write that Redis had shown any reader before the
  poll began (a remote Redis adds the network's delay).
- Nothing is cached while the connection is down, everything is dropped when it goes down, and a connection
  that stops answering is given up within 2 * PING_EVERY. Anything unexpected on it does the same.
- A process's own writes show at once if it calls `forget`.
- A job whose keys expire shows until Redis deletes them (its expiry cycle), not later than an uncached read
  of a key Redis has not yet deleted would.
- The connection is opened where every Redis connection is (app/connection.py): over TLS for a rediss:// REDIS_URL,
  and under Sentinel to the master the sentinels name at each (re)connection. A failover drops the connection (the
  old master dies, or the sentinels make it a replica and close its clients): everything is dropped and the
  listener follows the new master."""
from __future__ import annotations

import logging
import re
import select
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import hiredis

from app.connection import auth_command, open_socket, target
from app.settings import Settings

log = logging.getLogger("app.snapshot_cache")

T = TypeVar("T")
CHANNEL = "__redis__:invalidate"
PING_EVERY = 1.0  # seconds of silence before the connection is checked
RECONNECT_DELAY = 0.5
CONNECT_TIMEOUT = 5.0
MAX_ENTRIES = 2_000  # snapshots of about 2 KB: a few MB per web process


class TrackingUnsupported(Exception):
    """This Redis (or URL) cannot notify us: the cache stays off."""


class ConnectionLost(Exception):
    pass


class SnapshotCache(Generic[T]):
    def __init__(self, redis: Settings | str, prefixes: tuple[str, ...], max_entries: int = MAX_ENTRIES):
        """redis: the settings whose Redis it follows (a bare REDIS_URL: the default settings for it)."""
        self.settings = redis if isinstance(redis, Settings) else Settings(redis_url=redis)
        self.url = _safe(self.settings.redis_url)
        self.prefixes = tuple(prefix.encode() for prefix in prefixes)
        self.max_entries = max_entries
        self.lock = threading.Lock()  # guards everything below, and every read of the subscriber's socket
        self.entries: dict[str, T] = {}
        self.reading: dict[str, _Read[T]] = {}  # job id -> the read in flight whose result may be kept
        self.subscriber: Subscriber | None = None  # set while invalidations are arriving
        self.heard_at = 0.0  # when the subscriber last received anything
        self.stopped = threading.Event()
        threading.Thread(target=self._listen, name="snapshot-invalidations", daemon=True).start()

    @property
    def live(self) -> bool:
        return self.subscriber is not None

    def get(self, job_id: str, load: Callable[[], T], keep: Callable[[T], bool]) -> T:
        """The cached snapshot, or that of the read of it in flight, or `load()`, kept for next time when `keep`
        says it may be."""
        cached = self._quick_hit(job_id)
        if cached is not None:
            return cached[0]
        read: _Read[T] = _Read()
        with self.lock:
            self._catch_up()
            if job_id in self.entries:
                return self.entries[job_id]
            in_flight = self.reading.get(job_id)
            if in_flight is None and self.subscriber is not None:
                self.reading[job_id] = read
        if in_flight is not None and (shared := in_flight.shared()) is not None:
            return shared[0]
        return self._load(job_id, read, load, keep)

    def forget(self, job_id: str) -> None:
        """This process wrote the job's keys: read them afresh next time."""
        with self.lock:
            self._drop([job_id])

    def wait_live(self, timeout: float) -> bool:
        """For callers that want the cache in use from their first read (tests)."""
        deadline = time.monotonic() + timeout
        while not self.live and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.live

    def stop(self) -> None:
        self.stopped.set()

    def _quick_hit(self, job_id: str) -> tuple[T] | None:
        """Without the lock, which many threads polling would queue on: the cached snapshot, if nothing has been
        received that is not applied yet. In this order: no invalidation waiting on the socket, no one holding the
        lock (who may have taken invalidations off the socket and not applied them yet), and the socket looked at
        still the subscriber's (a subscriber, once replaced, never comes back)."""
        subscriber = self.subscriber
        if (subscriber is None or not subscriber.quiet() or self.lock.locked()
                or self.subscriber is not subscriber):
            return None
        try:
            return (self.entries[job_id],)
        except KeyError:
            return None

    def _load(self, job_id: str, read: _Read[T], load: Callable[[], T], keep: Callable[[T], bool]) -> T:
        try:
            value = load()
            read.settle((value,) if keep(value) else None)
        except BaseException:
            read.settle(None)
            with self.lock:
                self._withdraw(job_id, read)
            raise
        with self.lock:
            if read.result is not None:
                self._catch_up()  # an invalidation received meanwhile withdraws the read: it is not kept
            if self._withdraw(job_id, read) and read.result is not None:
                self._store(job_id, value)
        return value

    def _withdraw(self, job_id: str, read: _Read[T]) -> bool:
        """Lock held. Ends a read; whether its result may be kept (no invalidation withdrew it)."""
        if self.reading.get(job_id) is not read:
            return False
        del self.reading[job_id]
        return True

    def _store(self, job_id: str, value: T) -> None:
        self.entries[job_id] = value
        if len(self.entries) > self.max_entries:
            del self.entries[next(iter(self.entries))]

    def _catch_up(self) -> None:
        """Lock held. Apply what the subscriber has received; on any trouble stop caching (the listener
        reconnects)."""
        if self.subscriber is None:
            return
        try:
            messages = self.subscriber.received()
            if messages:
                self.heard_at = time.monotonic()
            for message in messages:
                self._apply(message)
        except Exception as exc:
            if not self.stopped.is_set():  # a stopped cache may see Redis go before it noticed the stop
                log.warning("status cache: invalidations from %s interrupted (%r)", self.url, exc)
            self._set_subscriber(None)

    def _apply(self, message: Any) -> None:
        if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
            return  # the subscription's confirmation, a PONG
        keys = message[2]
        if not isinstance(keys, list):  # FLUSHALL / FLUSHDB send no keys; anything else: play safe
            self._drop(None)
            return
        self._drop([key[len(prefix):].decode(errors="replace")
                    for key in keys for prefix in self.prefixes if key.startswith(prefix)])

    def _drop(self, job_ids: list[str] | None) -> None:
        if job_ids is None:
            self.entries.clear()
            self.reading.clear()
            return
        for job_id in job_ids:
            self.entries.pop(job_id, None)
            self.reading.pop(job_id, None)

    def _set_subscriber(self, subscriber: Subscriber | None) -> None:
        """Lock held. Without a subscriber nothing is cached: what was cached may have changed unnoticed."""
        self.subscriber = subscriber
        self.heard_at = time.monotonic()
        self.entries.clear()
        self.reading.clear()

    def _listen(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            try:
                subscriber = Subscriber(self.settings, self.prefixes)
            except TrackingUnsupported as exc:
                log.warning("status cache off: %s (%s); job statuses are read from Redis every time", exc, self.url)
                return
            except Exception as exc:
                failures += 1
                if failures == 1:  # once an outage, not every RECONNECT_DELAY
                    log.warning("status cache: cannot follow invalidations from %s (%r); reading Redis directly "
                                "until it can", self.url, exc)
                self.stopped.wait(RECONNECT_DELAY)
                continue
            if failures:
                log.info("status cache: following invalidations from %s again", self.url)
            failures = 0
            self._follow(subscriber)

    def _follow(self, subscriber: Subscriber) -> None:
        with self.lock:
            self._set_subscriber(subscriber)
        try:
            self._receive(subscriber)
        except Exception as exc:
            if not self.stopped.is_set():  # a stopped cache may see Redis go before it noticed the stop
                log.warning("status cache: invalidations from %s interrupted (%r)", self.url, exc)
        finally:
            with self.lock:
                if self.subscriber is subscriber:
                    self._set_subscriber(None)
            subscriber.close()

    def _receive(self, subscriber: Subscriber) -> None:
        """Until the connection fails or stops answering: apply invalidations as they arrive; PING when quiet."""
        pinged_at: float | None = None
        while not self.stopped.is_set() and self.subscriber is subscriber:
            if subscriber.wait(PING_EVERY):
                with self.lock:
                    self._catch_up()
                continue
            if pinged_at is not None and self.heard_at < pinged_at:
                raise ConnectionLost(f"no answer to PING within {PING_EVERY:g} s")
            pinged_at = time.monotonic()
            subscriber.send("PING")


@dataclass
class _Read(Generic[T]):
    """One read of a job's snapshot. A poll joins it while no invalidation has withdrawn it: the snapshot then
    shows every write whose invalidation the poll had received, as the poll's own read would. It gets the snapshot
    if it may be kept (it depends on tracked keys alone); else, or when the read failed, it reads itself."""
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[T] | None = None

    def settle(self, result: tuple[T] | None) -> None:
        self.result = result
        self.done.set()

    def shared(self) -> tuple[T] | None:
        """Once the read has ended: its snapshot, if others may have it."""
        self.done.wait()
        return self.result


class Subscriber:
    """One connection that tracks the prefixes' keys and receives their invalidations, read with hiredis's
    reader. (redis-py 8.1's pub/sub reader hands back None for RESP2 invalidation messages.) A TCP or TLS socket,
    to the one Redis or to the master the sentinels name (app/connection.py)."""

    def __init__(self, settings: Settings, prefixes: tuple[bytes, ...]):
        self._open(settings)
        try:
            client_id = self._call("CLIENT", "ID")
            self._track(client_id, prefixes)
            self._call("SUBSCRIBE", CHANNEL)
        except BaseException:
            self.close()
            raise
        self.sock.setblocking(False)

    def _open(self, settings: Settings) -> None:
        """Connects and authenticates (the socket still blocks, with a timeout)."""
        try:
            target(settings.redis_url)
        except ValueError as exc:
            raise TrackingUnsupported(str(exc)) from exc
        self.sock = open_socket(settings, CONNECT_TIMEOUT)
        self.reader = hiredis.Reader()
        try:
            if (auth := auth_command(settings)) is not None:
                self._call(*auth)
        except BaseException:
            self.close()
            raise

    def send(self, *args: Any) -> None:
        parts = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def wait(self, timeout: float) -> bool:
        """Whether something arrived within `timeout` seconds (TLS: decrypted bytes already waiting count)."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        return self._readable(timeout)

    def quiet(self) -> bool:
        """From any thread, without the lock: whether nothing has arrived (False once closed). Over TLS it cannot
        tell (the bytes already decrypted are looked at under the lock only): False."""
        if isinstance(self.sock, ssl.SSLSocket):
            return False
        try:
            return not self._readable(0)
        except (OSError, ValueError):  # closed meanwhile
            return False

    def _readable(self, timeout: float) -> bool:
        """A poll object of each call's own: two threads may not poll one at once."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def received(self) -> list[Any]:
        """Every whole message received so far, without waiting."""
        while True:
            try:
                self._read()
            except BlockingIOError:
                break
        messages = []
        while (message := self.reader.gets()) is not False:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()

    def _track(self, client_id: int, prefixes: tuple[bytes, ...]) -> None:
        """Redirect to ourselves: the connection that tracks is the one that hears."""
        try:
            self._call("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
                       *[arg for prefix in prefixes for arg in (b"PREFIX", prefix)])
        except hiredis.ReplyError as exc:
            if "unknown" in str(exc).lower() or str(exc).startswith("NOPERM"):
                raise TrackingUnsupported(f"Redis refused CLIENT TRACKING: {exc}") from exc
            raise

    def _call(self, *args: Any) -> Any:
        """While connecting (the socket still blocks, with a timeout): one command and its reply."""
        self.send(*args)
        while (reply := self.reader.gets()) is False:
            self._read()
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def _read(self) -> None:
        """One read from the socket into the reader (raises BlockingIOError once non-blocking and drained)."""
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:  # TLS: nothing whole to decrypt yet
            raise BlockingIOError(str(exc)) from exc
        if not data:
            raise ConnectionLost("Redis closed the connection")
        self.reader.feed(data)


def _safe(url: str) -> str:
    """The URL for logs, without its password."""
    return re.sub(r"(//[^:@/;]*):[^@/;]*@", r"\1:***@", url)
