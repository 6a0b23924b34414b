"""Celery's settings: the fixed policies below, and those that follow text2img-queue's Settings (app/settings.py).

`celery_settings(settings)` is what app/celery_app.py configures every Celery app with; nothing here reads the
environment."""
from __future__ import annotations

from typing import Any

from app.connection import celery_options
from app.settings import Settings

FIXED: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "imports": ("tasks.generate",),

    # A job is acknowledged only when it has ended, and a worker that dies mid-job gives it back.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # One job at a time per GPU worker, and no job waits in a busy worker's buffer while another GPU is idle;
    # the one exception is prompt pipelining (workers/pipeline.py), which raises the prefetch to 2 for the last
    # PIPELINE_LOOKAHEAD seconds of a job. Celery's own prefetch changes after a reconnect would undo that.
    "worker_prefetch_multiplier": 1,
    "worker_enable_prefetch_count_reduction": False,
    # STARTED is written by the execution that took the job's lease (tasks/generate.py), not by Celery before the
    # task runs: a copy of a job that another worker runs must not overwrite that job's progress.
    "task_track_started": False,
    "result_extended": True,
    # Events for Flower.
    "worker_send_task_events": True,
    "task_send_sent_event": True,
    "broker_connection_retry_on_startup": True,
    "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
    "redis_socket_timeout": 10.0,
    "redis_socket_connect_timeout": 5.0,
    "redis_retry_on_timeout": True,
}


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The whole Celery configuration for these settings. The broker's connection options (Sentinel's master name,
    TLS) come from app/connection.py, where every Redis connection is made; the result backend connects there."""
    connection = celery_options(settings)
    return {
        **FIXED,
        **{name: value for name, value in connection.items() if name != "broker_transport_options"},
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_default_queue": settings.queue_name,
        "result_expires": settings.result_expires,
        # A job whose worker died is found by its lease (app/leases.py) and handed back within about LEASE_TTL +
        # REAPER_INTERVAL seconds (workers/reaper.py). The broker's visibility timeout (kombu hands back any
        # message unacknowledged for that long) is only the last resort: it must outlast the longest job.
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            # Look for abandoned jobs every few seconds (the default sweep is far slower).
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            **connection.get("broker_transport_options", {}),
        },
    }
