"""Idempotency keys: `t2i:idem:{hash}` holds the job id and request fingerprint an Idempotency-Key was first used
with, for the retention window (RESULT_EXPIRES)."""
from __future__ import annotations

import hashlib
import json

import redis


class IdempotencyKeys:
    def __init__(self, client: redis.Redis, expires: int):
        self.redis = client
        self.expires = expires

    def claim(self, client: str | None, key: str, fingerprint: str, job_id: str) -> tuple[str, str] | None:
        """Claim `key` (scoped to the API client) for a new job; if an earlier request claimed it within the
        retention window, returns that (job id, request fingerprint) instead."""
        name = _name(client, key)
        claim = json.dumps({"job_id": job_id, "fingerprint": fingerprint})
        if self.redis.set(name, claim, nx=True, ex=self.expires):
            return None
        earlier = self.redis.get(name)
        if earlier is None:  # expired in between: try once more
            return self.claim(client, key, fingerprint, job_id)
        data = json.loads(earlier)
        return data["job_id"], data["fingerprint"]

    def release(self, client: str | None, key: str) -> None:
        """For a job that could not be queued: a retry of the request may try again."""
        self.redis.delete(_name(client, key))


def _name(client: str | None, key: str) -> str:
    return "t2i:idem:" + hashlib.sha256(f"{client or ''}\0{key}".encode()).hexdigest()
