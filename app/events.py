"""Live job events: one Redis pub/sub connection per process, shared by every event stream the process serves.

Every state write of a job publishes the new value on the job's Celery result key (app/results.py), and a job
leaving the ready index, for a GPU (app/dispatch.py) or because it ended while queued (app/results.py), publishes
on QUEUE_EVENTS: the positions behind it change. (A job placed ahead of others, with a higher priority, does not:
their next event shows it.) The
hub subscribes to the channel of each job that a stream of this process follows (once, however many streams follow
it) and to QUEUE_EVENTS, and wakes the streams concerned; each stream then reads its job's status itself. The hub
reads no status: it only says when one may have changed.

- follow() returns once Redis has the subscription (a PING sent after the SUBSCRIBE has been answered): a status
  read after that misses no write.
- If the connection fails or stops answering, every follower is told it is `lost` (its stream ends; the client
  reconnects and follows afresh). The next follow() connects again.
- With no follower for IDLE_SECONDS the thread closes the connection and ends; the next follow() starts another."""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Any

from app.connection import target
from app.dispatch import QUEUE_EVENTS
from app.settings import Settings
from app.snapshot_cache import ConnectionLost, Subscriber

log = logging.getLogger("app.events")

PING_EVERY = 5.0  # seconds of silence before the connection is checked
FOLLOW_TIMEOUT = 5.0  # the longest follow() waits for a connection and for Redis to confirm the subscription
IDLE_SECONDS = 60.0


class EventsUnavailable(Exception):
    """No subscription could be made now (Redis unreachable or silent, or a URL the hub cannot follow)."""


class Follower:
    """One stream's interest in one channel. Its file descriptor turns readable when something it follows may
    have changed (a pipe: a stream can wait for it and for its client's socket at once)."""

    def __init__(self, channel: bytes, link: _Link):
        self.channel = channel
        self.link = link
        self.queued = True  # also woken when the queue moves; the stream clears it while its job is not queued
        self.lost = False  # the connection went: nothing more will wake it
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def notify(self) -> None:
        try:
            os.write(self._write, b"!")
        except (BlockingIOError, OSError):  # full (it has been told already), or closed
            pass

    def drain(self) -> None:
        """Forget the wake-ups received so far (their changes are about to be read)."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read = self._write = -1


class _Link:
    """One connection's state: the followers of each channel, and the PINGs being waited for."""

    def __init__(self, connection: Channels):
        self.connection = connection
        self.channels: dict[bytes, set[Follower]] = {}
        self.barriers: dict[bytes, threading.Event] = {}
        self.alive = True
        self.idle_since: float | None = time.monotonic()


class EventHub:
    """settings: where Redis is (any REDIS_URL form: app/connection.py)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.where = target(settings.redis_url).address  # for logs: no password
        self.lock = threading.Lock()  # guards everything below, and every command sent on the connection
        self.changed = threading.Condition(self.lock)  # the link came or the thread ended
        self.link: _Link | None = None
        self.thread: threading.Thread | None = None
        self.tokens = itertools.count()

    def follow(self, channel: bytes, timeout: float = FOLLOW_TIMEOUT) -> Follower:
        """A follower of `channel`, once Redis has its subscription (EventsUnavailable if that takes longer than
        `timeout`). Every follower must be given back with unfollow()."""
        deadline = time.monotonic() + timeout
        started = False
        with self.lock:
            while self.link is None:
                if self.thread is None:  # none yet, or the last one ended (idle, failed)
                    if started:  # the one this call started could not connect
                        raise EventsUnavailable(f"no pub/sub connection to {self.where}")
                    self.thread = threading.Thread(target=self._run, name="job-events", daemon=True)
                    self.thread.start()
                    started = True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EventsUnavailable(f"no pub/sub connection to {self.where} within {timeout:g} s")
                self.changed.wait(remaining)
            link = self.link
            follower = Follower(channel, link)
            token = b"%d" % next(self.tokens)
            confirmed = link.barriers[token] = threading.Event()
            followers = link.channels.setdefault(channel, set())
            followers.add(follower)
            link.idle_since = None
            try:
                if len(followers) == 1:
                    link.connection.send("SUBSCRIBE", channel)
                link.connection.send("PING", token)
                sent = True
            except OSError:  # the listener sees the connection fail too
                sent = False
        if not (sent and confirmed.wait(max(0.0, deadline - time.monotonic())) and link.alive):
            with self.lock:
                link.barriers.pop(token, None)
            self.unfollow(follower)
            raise EventsUnavailable(f"Redis at {self.where} did not confirm a subscription within {timeout:g} s")
        return follower

    def unfollow(self, follower: Follower) -> None:
        with self.lock:
            link = follower.link
            followers = link.channels.get(follower.channel)
            if followers is not None and follower in followers:
                followers.discard(follower)
                if not followers:
                    del link.channels[follower.channel]
                    if link.alive:
                        try:
                            link.connection.send("UNSUBSCRIBE", follower.channel)
                        except OSError:
                            pass
                if not link.channels:
                    link.idle_since = time.monotonic()
            follower.close()

    def _run(self) -> None:
        try:
            connection = Channels(self.settings, QUEUE_EVENTS)
        except Exception as exc:
            log.warning("live events: cannot subscribe at %s (%r); event streams are refused until it can",
                        self.where, exc)
            with self.lock:
                self.thread = None
                self.changed.notify_all()
            return
        link = _Link(connection)
        with self.lock:
            self.link = link
            self.changed.notify_all()
        try:
            self._receive(link)
        except Exception as exc:
            log.log(logging.WARNING if link.channels else logging.INFO,
                    "live events: the connection to %s failed (%r); open streams end and reconnect", self.where, exc)
        finally:
            with self.lock:
                link.alive = False
                if self.link is link:
                    self.link = None
                if self.thread is threading.current_thread():
                    self.thread = None
                for followers in link.channels.values():
                    for follower in followers:
                        follower.lost = True
                        follower.notify()
                for confirmed in link.barriers.values():
                    confirmed.set()
                self.changed.notify_all()
            connection.close()

    def _receive(self, link: _Link) -> None:
        """Until the connection fails, stops answering, or has been idle for IDLE_SECONDS."""
        connection = link.connection
        heard_at = time.monotonic()
        pinged_at: float | None = None
        while True:
            if connection.wait(PING_EVERY):
                messages = connection.received()
                heard_at = time.monotonic()
                with self.lock:
                    for message in messages:
                        self._dispatch(link, message)
            else:
                if pinged_at is not None and heard_at < pinged_at:
                    raise ConnectionLost(f"no answer to PING within {PING_EVERY:g} s")
                pinged_at = time.monotonic()
                with self.lock:
                    connection.send("PING")
            with self.lock:
                if link.idle_since is not None and time.monotonic() - link.idle_since >= IDLE_SECONDS:
                    link.alive = False  # under the lock: no follow() can join it any more
                    self.link = None
                    return

    def _dispatch(self, link: _Link, message: Any) -> None:
        """Lock held."""
        if isinstance(message, Exception):
            raise message
        if not isinstance(message, list) or len(message) < 2:
            return
        kind = message[0]
        if kind == b"message":
            if message[1] == QUEUE_EVENTS.encode():
                targets = [f for followers in link.channels.values() for f in followers if f.queued]
            else:
                targets = list(link.channels.get(message[1], ()))
            for follower in targets:
                follower.notify()
        elif kind == b"pong":
            confirmed = link.barriers.pop(message[1], None)
            if confirmed is not None:
                confirmed.set()


class Channels(Subscriber):
    """A plain pub/sub connection, read as the snapshot cache reads its own (hiredis, no key tracking), subscribed
    to `channel` from the start. Only the hub's thread reads it; commands are sent under the hub's lock."""

    def __init__(self, settings: Settings, channel: str):
        self._open(settings)  # TCP or TLS, to the one Redis or the master the sentinels name; authenticated
        try:
            self._call("SUBSCRIBE", channel)
        except BaseException:
            self.close()
            raise
        self.sock.setblocking(False)
