"""The Celery application every process shares, configured from celeryconfig.py."""
from __future__ import annotations

import functools

import redis
from celery import Celery

TASK_NAME = "text2img.generate"

celery = Celery("text2img")
celery.config_from_object("celeryconfig")


@functools.lru_cache(maxsize=None)
def _redis_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
                                retry_on_timeout=True)


def redis_client() -> redis.Redis:
    """The process's Redis connection pool (redis-py reopens connections after a fork)."""
    return _redis_for(celery.conf.broker_url)
