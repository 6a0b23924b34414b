"""The Celery application every process shares, configured from celeryconfig.py."""
from __future__ import annotations

import functools
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from celery import Celery
from celery.signals import after_task_publish

TASK_NAME = "text2img.generate"
RECORDED_HEADER = "t2i_recorded"  # set by app.jobs.submit, which records the job before sending it

celery = Celery("text2img")
celery.config_from_object("celeryconfig")
# Every state write refuses to replace a terminal state (app/results.py). Named here, not by Celery(backend=...),
# which would replace the configured result_backend URL with the class name.
celery.backend_cls = "app.results:GuardedRedisBackend"


@functools.lru_cache(maxsize=None)
def _redis_for(url: str) -> redis.Redis:
    # Rides out a Redis restart of up to ~20 s: connection errors are retried with capped backoff.
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=12)
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
                                retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError])


@functools.cache
def redis_client() -> redis.Redis:
    """The process's Redis connection pool (redis-py reopens connections after a fork)."""
    return _redis_for(celery.conf.broker_url)


@after_task_publish.connect
def _record_raw_publish(sender: str | None = None, headers: dict | None = None, body: Any = None, **_: Any) -> None:
    """A job sent with a raw `send_task` is known (and has a queue position) from the moment it is sent."""
    if sender != TASK_NAME or not headers or headers.get(RECORDED_HEADER):
        return
    from app import registry  # registry needs this module: imported here, once the app exists
    from app.request import is_job_id
    job_id = headers.get("id")
    if is_job_id(job_id) and not registry.job(job_id):
        args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) and len(body) > 1 else ((), {})
        request = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
        registry.record_enqueued(job_id, {**request, **(kwargs if isinstance(kwargs, dict) else {})})
