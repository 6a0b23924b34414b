"""Webhooks: a job that names a `webhook_url` has its public status POSTed there when it ends, signed, at least
once, from a durable outbox in Redis.

- t2i:webhooks             stream, the outbox: one entry per delivery (delivery id, job id, url, state, first
                           attempt, attempt number). The terminal state write adds it in the same Lua script
                           (app/results.py), so a job that ended has its delivery queued, whatever dies next.
- group `senders`          every GPU worker (and the reaper process) runs a sender that reads the stream in this
                           consumer group: an entry a sender took and did not finish (it died) is claimed by
                           another after CLAIM_AFTER seconds.
- t2i:webhooks:delayed     zset, the deliveries waiting for their next attempt (score: when); a script moves the
                           due ones back into the stream
- t2i:webhooks:failed      list, the dead letters: deliveries that kept failing for WEBHOOK_RETRY_HOURS; shown by
                           GET /api/webhooks/failed and `text2img webhooks`, and replayed from there

Each move between these is one script or transaction, so a delivery is never lost between two of them. Its id
(`X-Webhook-Id`) is the same on every attempt: receivers de-duplicate with it.

Signature (as Stripe's): `X-Webhook-Signature` = hex HMAC-SHA256 of `<X-Webhook-Timestamp>.<body>` with
WEBHOOK_SECRET (README: how a receiver checks it)."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from app.counters import WEBHOOK_DEAD, WEBHOOK_DELIVERED, WEBHOOK_RETRY, count

OUTBOX, DELAYED, FAILED = "t2i:webhooks", "t2i:webhooks:delayed", "t2i:webhooks:failed"
GROUP = "senders"
CLAIM_AFTER = 30.0  # seconds an entry a sender took may stay unfinished before another sender takes it over
MAX_BACKOFF = 600.0
FAILED_KEPT = 1000


class WebhookRefused(ValueError):
    """A webhook URL the server will not call (HTTP 422 at submit)."""


def check_url(url: str, allow_private: bool) -> None:
    """Raises WebhookRefused unless `url` is http(s) to a public address (or any with `allow_private`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("must be an http or https URL with a host")
    if allow_private:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused(f"its host does not resolve ({exc})")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise WebhookRefused(f"its host resolves to {ip}, a loopback, link-local or private address "
                                 f"(WEBHOOK_ALLOW_PRIVATE=1 allows it)")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    job_id: str
    url: str
    state: str  # SUCCESS, FAILURE or CANCELLED
    client: str
    first_at: float
    attempt: int = 0

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> "Delivery":
        data = {key.decode(): value.decode() for key, value in fields.items()}
        return cls(data["delivery_id"], data["job_id"], data["url"], data["state"], data.get("client", ""),
                   float(data["first_at"]), int(data.get("attempt", 0)))

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt` + 1: exponential, capped, with jitter (half to all of it)."""
    return min(MAX_BACKOFF, 2.0 ** attempt) * random.uniform(0.5, 1.0)


# Due deliveries back into the stream. KEYS: delayed, outbox; ARGV: now
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, raw in ipairs(due) do
  local fields = {}
  for name, value in pairs(cjson.decode(raw)) do table.insert(fields, name) table.insert(fields, tostring(value)) end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
  redis.call('ZREM', KEYS[1], raw)
end
return #due
"""


class Outbox:
    """retry_hours: WEBHOOK_RETRY_HOURS."""

    def __init__(self, client: redis.Redis, retry_hours: float):
        self.redis = client
        self.retry_seconds = retry_hours * 3600
        self._move_due = client.register_script(_MOVE_DUE)

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(OUTBOX, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def take(self, sender: str, block_ms: int = 1000) -> list[tuple[bytes, Delivery]]:
        """Deliveries for this sender: first any another sender left unfinished, then new ones."""
        self._move_due(keys=[DELAYED, OUTBOX], args=[time.time()])
        # [next id, entries] (and, from Redis 7, the ids of entries deleted meanwhile)
        entries = list(self.redis.xautoclaim(OUTBOX, GROUP, sender, int(CLAIM_AFTER * 1000), count=10)[1])
        if not entries:
            for _, messages in self.redis.xreadgroup(GROUP, sender, {OUTBOX: ">"}, count=10, block=block_ms) or []:
                entries += messages
        return [(entry_id, Delivery.parse(fields)) for entry_id, fields in entries if fields]

    def delivered(self, entry_id: bytes) -> None:
        pipe = self.redis.pipeline()
        pipe.xack(OUTBOX, GROUP, entry_id)
        pipe.xdel(OUTBOX, entry_id)
        count(pipe, WEBHOOK_DELIVERED)
        pipe.execute()

    def failed(self, entry_id: bytes, delivery: Delivery, error: str) -> str:
        """After a failed attempt: "retry" (scheduled) or "dead" (its retry window is over). One transaction."""
        later = Delivery(**{**delivery.fields(), "attempt": delivery.attempt + 1})
        pipe = self.redis.pipeline()
        if time.time() - delivery.first_at >= self.retry_seconds:
            outcome = "dead"
            pipe.lpush(FAILED, json.dumps({**later.fields(), "error": error[:500], "failed_at": time.time()}))
            pipe.ltrim(FAILED, 0, FAILED_KEPT - 1)
        else:
            outcome = "retry"
            pipe.zadd(DELAYED, {json.dumps(later.fields()): time.time() + backoff(delivery.attempt)})
        count(pipe, WEBHOOK_DEAD if outcome == "dead" else WEBHOOK_RETRY)
        pipe.xack(OUTBOX, GROUP, entry_id)
        pipe.xdel(OUTBOX, entry_id)
        pipe.execute()
        return outcome

    def dead_letters(self, client: str | None = None) -> list[dict[str, Any]]:
        """The newest first; with `client`, only the deliveries of that API client's jobs."""
        letters = [json.loads(raw) for raw in self.redis.lrange(FAILED, 0, -1)]
        return [letter for letter in letters if client is None or letter.get("client") == client]

    def replay(self, delivery_id: str, client: str | None = None) -> bool:
        """A dead letter goes out again (same id, a new retry window); False if there is none with that id (of
        that client's, with `client`)."""
        for raw in self.redis.lrange(FAILED, 0, -1):
            letter = json.loads(raw)
            if letter["delivery_id"] == delivery_id and (client is None or letter.get("client") == client):
                again = Delivery(letter["delivery_id"], letter["job_id"], letter["url"], letter["state"],
                                 letter.get("client", ""), time.time())
                pipe = self.redis.pipeline()
                pipe.lrem(FAILED, 1, raw)
                pipe.xadd(OUTBOX, {k: str(v) for k, v in again.fields().items()})
                pipe.execute()
                return True
        return False
