"""The GPU workers online, from their heartbeats:

- t2i:workers       zset worker name -> last heartbeat; t2i:worker:{name} hash: gpu, comfyui_url, healthy
- t2i:ready         zset of the workers whose ComfyUI answers (they take jobs) -> last heartbeat
- t2i:capabilities:{name}  what the worker's GPU can run (app/capabilities.py), as JSON; t2i:can:{name} the same
                    as a set of `node:<class>` and `<folder>:<file>` words, for dispatch (app/dispatch.py)
"""
from __future__ import annotations

import json
import time
from typing import Any

import redis

from app.capabilities import Capabilities

WORKERS, READY, CAPABLE = "t2i:workers", "t2i:ready", "t2i:capable"
STALE_AFTER = 3  # heartbeats
KNOWN_CAPABILITIES_TTL = 5.0  # seconds a process keeps the GPUs' capabilities it read (they change in minutes)


def _info_key(worker: str) -> str:
    return f"t2i:worker:{worker}"


def _capabilities_key(worker: str) -> str:
    return f"t2i:capabilities:{worker}"


def can_key(worker: str) -> str:
    return f"t2i:can:{worker}"


class Fleet:
    """heartbeat: seconds between a worker's heartbeats (WORKER_HEARTBEAT)."""

    def __init__(self, client: redis.Redis, heartbeat: float):
        self.redis = client
        self.heartbeat_interval = heartbeat
        self._known: tuple[float, dict[str, Capabilities]] = (float("-inf"), {})

    def stale_before(self, interval: float | None = None) -> float:
        return time.time() - (interval or self.heartbeat_interval) * STALE_AFTER

    def heartbeat(self, worker: str, info: dict[str, Any], healthy: bool, interval: float) -> None:
        """Also forgets workers whose heartbeat went stale (containers that are gone), so the sets stay small."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(WORKERS, 0, self.stale_before(interval))
        pipe.zremrangebyscore(READY, 0, self.stale_before(interval))
        pipe.zadd(WORKERS, {worker: now})
        if healthy:
            pipe.zadd(READY, {worker: now})
        else:
            pipe.zrem(READY, worker)
        pipe.hset(_info_key(worker), mapping={k: json.dumps(v) for k, v in info.items()})
        pipe.expire(_info_key(worker), int(interval * STALE_AFTER) + 1)
        pipe.execute()

    def publish_capabilities(self, worker: str, capabilities: Capabilities, ttl: float) -> None:
        """Kept `ttl` seconds: a worker refreshes it well before, while its ComfyUI answers."""
        pipe = self.redis.pipeline()
        pipe.set(_capabilities_key(worker), capabilities.to_json(), ex=max(1, int(ttl)))
        pipe.delete(can_key(worker))
        if capabilities.offers():
            pipe.sadd(can_key(worker), *capabilities.offers())
            pipe.expire(can_key(worker), max(1, int(ttl)))
        pipe.sadd(CAPABLE, worker)
        pipe.execute()

    def capabilities(self, worker: str) -> Capabilities | None:
        raw = self.redis.get(_capabilities_key(worker))
        return None if raw is None else Capabilities.from_dict(json.loads(raw))

    def known_capabilities(self) -> dict[str, Capabilities]:
        """Every GPU whose capabilities are published (online, or gone within a few refreshes), by worker name;
        read from Redis at most every KNOWN_CAPABILITIES_TTL seconds."""
        read_at, known = self._known
        if time.monotonic() - read_at < KNOWN_CAPABILITIES_TTL:
            return known
        names = sorted(name.decode() for name in self.redis.smembers(CAPABLE))
        values = self.redis.mget([_capabilities_key(name) for name in names]) if names else []
        known = {name: Capabilities.from_dict(json.loads(raw)) for name, raw in zip(names, values) if raw}
        expired = set(names) - set(known)
        if expired:
            self.redis.srem(CAPABLE, *expired)
        self._known = (time.monotonic(), known)
        return known

    def forget_known(self) -> None:
        """The next known_capabilities() reads Redis (for a process that knows the GPUs changed all at once)."""
        self._known = (float("-inf"), {})

    def gone(self, worker: str) -> None:
        pipe = self.redis.pipeline()
        pipe.zrem(WORKERS, worker)
        pipe.zrem(READY, worker)
        pipe.srem(CAPABLE, worker)
        pipe.delete(_info_key(worker), _capabilities_key(worker), can_key(worker))
        pipe.execute()

    def fresh(self) -> set[str]:
        """The workers whose heartbeat is fresh (their ComfyUI answering or not)."""
        return {name.decode() for name in self.redis.zrangebyscore(WORKERS, self.stale_before(), "+inf")}

    def ready_count(self) -> int:
        """GPU workers that take jobs now: heartbeat fresh and their ComfyUI answering."""
        return int(self.redis.zcount(READY, self.stale_before(), "+inf"))

    def online(self, interval: float | None = None) -> list[dict[str, Any]]:
        """Workers whose heartbeat is fresh, with what they last said (gpu, comfyui_url, healthy) and, once known,
        their GPU's `capabilities` (model files by folder, the number of node classes)."""
        self.redis.zremrangebyscore(WORKERS, 0, self.stale_before(interval))
        names = [name.decode() for name in self.redis.zrange(WORKERS, 0, -1)]
        pipe = self.redis.pipeline(transaction=False)  # every worker's two keys in one round trip
        for name in names:
            pipe.hgetall(_info_key(name))
            pipe.get(_capabilities_key(name))
        replies = pipe.execute()
        workers = []
        for name, raw, capabilities in zip(names, replies[::2], replies[1::2]):
            if raw:
                worker = {"name": name, **{k.decode(): json.loads(v) for k, v in raw.items()}}
                if capabilities is not None:
                    worker["capabilities"] = Capabilities.from_dict(json.loads(capabilities)).summary()
                workers.append(worker)
        return workers
