"""Every Redis connection of the project is opened here, from Settings: the connection pools (`connect`), the raw
socket the status cache speaks RESP on (`open_socket`), and the options Celery's broker is given (`celery_options`;
Celery's result backend uses `connect` itself, app/results.py). `Replication` says whether a replica has what was
written (under Sentinel).

REDIS_URL takes three forms:
- `redis://[user:password@]host:port/db`: one Redis over plain TCP;
- `rediss://[user:password@]host:port/db`: over TLS, the server checked against REDIS_CA_FILE (or the system's CAs)
  and its host name, this client showing REDIS_CERT_FILE / REDIS_KEY_FILE when set (`tls-auth-clients`);
- `sentinel://[user:password@]host:port/db;sentinel://host2:port;...`: the master that the sentinels name
  REDIS_SENTINEL_MASTER, asked again whenever a connection to it fails (after a failover, the new master). The
  URL's user and password are the master's; REDIS_SENTINEL_PASSWORD is the sentinels' own (`requirepass` in
  sentinel.conf)."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from app.settings import Settings

SENTINEL_TIMEOUT = 0.5  # seconds a sentinel may take to answer before the next one is asked
REPLICA_WAIT = 0.5  # seconds a write waits for a replica to have it before the writer checks the master instead
REPLICAS_CHECKED_EVERY = 1.0  # seconds a process goes by the number of replicas it last saw
BARRIER_KEY = "t2i:replication:barrier"
LARGE_VALUE = 64 * 1024  # bytes: a value this large is sent as it is rather than copied into the command


@dataclass(frozen=True)
class Target:
    """Where REDIS_URL points: one server (`sentinels` empty), or the sentinels that name the master."""
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    sentinels: tuple[tuple[str, int], ...] = ()

    @property
    def address(self) -> str:
        """Where it is, for logs: no credentials."""
        if self.sentinels:
            return "sentinel://" + ";".join(f"{host}:{port}" for host, port in self.sentinels) + f"/{self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def target(url: str) -> Target:
    """REDIS_URL taken apart (ValueError for another scheme)."""
    chunks = [chunk for chunk in url.split(";") if chunk.strip()]
    parts = [urlsplit(chunk.strip()) for chunk in chunks]
    scheme = parts[0].scheme if parts else ""
    if scheme not in ("redis", "rediss", "sentinel") or any(part.scheme != scheme for part in parts) or (
            scheme != "sentinel" and len(parts) > 1):
        raise ValueError(f"REDIS_URL must be redis://, rediss:// or sentinel://host:port;sentinel://...: {url!r}")
    first = parts[0]
    db = next((part.path.strip("/") for part in parts if part.path.strip("/")), "") or "0"
    common = dict(db=int(db), username=unquote(first.username) if first.username else None,
                  password=unquote(first.password) if first.password is not None else None)
    if scheme == "sentinel":
        sentinels = tuple((part.hostname or "127.0.0.1", part.port or 26379) for part in parts)
        return Target(*sentinels[0], tls=False, sentinels=sentinels, **common)
    return Target(first.hostname or "127.0.0.1", first.port or 6379, tls=scheme == "rediss", **common)


def connect(settings: Settings) -> redis.Redis:
    """A connection pool that rides out a Redis restart or a Sentinel failover of up to ~20 s: connection errors
    are retried with capped backoff, and under Sentinel each new connection asks the sentinels for the master
    (redis-py reopens connections after a fork)."""
    where = target(settings.redis_url)
    options: dict[str, Any] = dict(
        db=where.db, username=where.username, password=where.password, socket_timeout=10, socket_connect_timeout=5,
        health_check_interval=30, retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=12),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    if where.sentinels:
        client = _sentinels(settings, where).master_for(settings.redis_sentinel_master, redis_class=redis.Redis,
                                                        connection_class=MasterConnection, **options)
    else:
        if where.tls:
            options.update(ssl=True, **ssl_options(settings))
        client = redis.Redis(host=where.host, port=where.port, **options)
    client.connection_pool.connection_kwargs["command_packer"] = CommandPacker(client.get_encoder().encode)
    return client


class CommandPacker:
    """hiredis packs a command fastest, except one carrying a large value (an image), which it copies at about
    1.6 ms per MB; redis-py's own packer sends such a value as it is. (redis.Redis takes no packer: it is set in
    the pool's connection arguments.)"""

    def __init__(self, encode: Any):
        self.whole = PythonRespSerializer(LARGE_VALUE, encode)
        self.small = HiredisRespSerializer() if HIREDIS_AVAILABLE else self.whole

    def pack(self, *args: Any) -> Any:
        if any(isinstance(arg, (bytes, bytearray, memoryview)) and len(arg) > LARGE_VALUE for arg in args):
            return self.whole.pack(*args)
        return self.small.pack(*args)


class MasterConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name, asked again on every reconnection. (redis-py 8.1's own
    reconnects a command's retries to the address it had, so a command in flight when the master died retried the
    dead master until it gave up, even once the sentinels had promoted the replica.)"""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if retry_socket_connect and not self._sock:
            return self.connect()  # asks the sentinels (SentinelManagedConnection.connect_to), with retries
        return super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def ssl_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options (the names kombu's `broker_use_ssl` takes too)."""
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": settings.redis_ca_file,
            "ssl_certfile": settings.redis_cert_file, "ssl_keyfile": settings.redis_key_file}


def celery_options(settings: Settings) -> dict[str, Any]:
    """What Celery's broker (kombu) needs beyond the URL: the master's name and the sentinels' password, or the
    TLS options."""
    where = target(settings.redis_url)
    if where.sentinels:
        return {"broker_transport_options": {"master_name": settings.redis_sentinel_master,
                                             "sentinel_kwargs": _sentinel_kwargs(settings)}}
    if where.tls:
        return {"broker_use_ssl": ssl_options(settings)}
    return {}


def master_address(settings: Settings) -> tuple[str, int]:
    """The server to open a socket to: the URL's, or the master the sentinels name now."""
    where = target(settings.redis_url)
    if not where.sentinels:
        return where.host, where.port
    sentinels = _sentinels(settings, where)
    try:
        host, port = sentinels.discover_master(settings.redis_sentinel_master)
    finally:
        sentinels.close()
    return str(host), int(port)


def open_socket(settings: Settings, timeout: float) -> socket.socket:
    """A raw socket to the Redis (the master, under Sentinel), TLS-wrapped for rediss://, blocking with `timeout`;
    the caller speaks RESP on it, starting with `auth_command(settings)`."""
    host, port = master_address(settings)
    sock = socket.create_connection((host, port), timeout=timeout)
    if not target(settings.redis_url).tls:
        return sock
    try:
        context = ssl.create_default_context(cafile=settings.redis_ca_file)
        if settings.redis_cert_file:
            context.load_cert_chain(settings.redis_cert_file, settings.redis_key_file)
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def auth_command(settings: Settings) -> tuple[str, ...] | None:
    """The AUTH command a raw socket starts with (None: no password in the URL)."""
    where = target(settings.redis_url)
    if where.password is None:
        return None
    return ("AUTH", where.username, where.password) if where.username else ("AUTH", where.password)


class Replication:
    """Under Sentinel: whether a replica has every write made so far, so that a failover cannot take them back.

    Redis replicates asynchronously: the master acknowledges a write before any replica has it, and a failover
    promotes a replica without whatever it had not received yet. The few steps that must not be taken back (a
    submit answered, a prompt sent to ComfyUI, a job's end before ComfyUI forgets the prompt) ask `confirmed()`:
    one write and WAIT on the same connection, which returns once a replica has everything up to it (replication
    is one ordered stream). When it cannot say so (no replica connected, one lagging more than REPLICA_WAIT, or a
    failover meanwhile), the caller checks on the master what it needs and makes it again if it is gone."""

    def __init__(self, client: redis.Redis, settings: Settings):
        self.redis = client
        self.on = bool(target(settings.redis_url).sentinels)
        self.lock = threading.Lock()
        self.replicas = 0
        self.checked_at = float("-inf")

    def confirmed(self) -> bool:
        """True: a replica has every write made before this call. Always True without Sentinel (no failover)."""
        if not self.on:
            return True
        try:
            if not self._replicas():
                return False  # none to wait for (nor any to fail over to, unless one comes back)
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(BARRIER_KEY)
            pipe.execute_command("WAIT", 1, int(REPLICA_WAIT * 1000))
            return int(pipe.execute()[1]) >= 1
        except (redis.RedisError, OSError):
            return False  # Redis cannot say now: the caller's own check tells

    def _replicas(self) -> int:
        """The replicas connected to the master (ROLE), seen at most REPLICAS_CHECKED_EVERY seconds ago."""
        with self.lock:
            if time.monotonic() - self.checked_at < REPLICAS_CHECKED_EVERY:
                return self.replicas
        role = self.redis.execute_command("ROLE")
        replicas = len(role[2]) if role and role[0] in (b"master", "master") else 0
        with self.lock:
            self.replicas, self.checked_at = replicas, time.monotonic()
        return replicas


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """The connections to the sentinels: short timeouts, and no retry (a sentinel that is down is skipped at once:
    the next one is asked)."""
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT,
                              "retry": Retry(NoBackoff(), 0)}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    return kwargs


def _sentinels(settings: Settings, where: Target) -> Sentinel:
    return Sentinel(list(where.sentinels), sentinel_kwargs=_sentinel_kwargs(settings))
