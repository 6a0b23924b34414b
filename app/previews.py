"""The latest preview frame of a running job, kept briefly in Redis."""
from __future__ import annotations

import redis


class Previews:
    """ttl: seconds the latest frame is kept (PREVIEW_TTL)."""

    def __init__(self, client: redis.Redis, ttl: int):
        self.redis = client
        self.ttl = ttl

    def save(self, job_id: str, content_type: str, data: bytes) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(f"t2i:preview:{job_id}", mapping={"content_type": content_type, "data": data})
        pipe.expire(f"t2i:preview:{job_id}", self.ttl)
        pipe.execute()

    def latest(self, job_id: str) -> tuple[str, bytes] | None:
        raw = self.redis.hgetall(f"t2i:preview:{job_id}")
        if not raw:
            return None
        return raw[b"content_type"].decode(), raw[b"data"]
