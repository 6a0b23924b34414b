"""Opening the Redis connection pool every part of the project shares with Celery's broker."""
from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(url: str) -> redis.Redis:
    """A connection pool that rides out a Redis restart of up to ~20 s: connection errors are retried with capped
    backoff (redis-py reopens connections after a fork)."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=12)
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
                                retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError])
