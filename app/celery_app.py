"""The Celery app: made from a Settings object, it is also where a process finds the Redis-backed parts of the
project (job records, the ready index and its intake, statuses, outputs ...), each built once per app on the
app's own connection pool.

`celery` is the one module-level object: the app that `celery --app app.celery_app` (Flower) loads, built from the
environment. Everything else takes an app (or its parts) as an argument; `create_celery(settings)` makes another,
so that two differently configured apps can live in one process."""
from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from celery import Celery
from redis import Redis, RedisError

from app.connection import Replication, connect
from app.dispatch import Dispatcher
from app.fleet import Fleet
from app.idempotency import IdempotencyKeys
from app.inputs import InputImages
from app.intake import Intake
from app.outputs import OutputStore, output_store
from app.previews import Previews
from app.records import JobRecords
from app.settings import Settings
from app.snapshot import Snapshots
from app.status_reader import StatusReader
from app.templates import Templates
from app.webhooks import Outbox
from celeryconfig import celery_settings

log = logging.getLogger("app.celery_app")

TASK_NAME = "text2img.generate"


class Text2ImgCelery(Celery):
    def __init__(self, settings: Settings):
        super().__init__("text2img")
        self.settings = settings
        self.config_from_object(celery_settings(settings))
        # Every state write refuses to replace a terminal state (app/results.py). Named here, not by
        # Celery(backend=...), which would replace the configured result_backend URL with the class name.
        self.backend_cls = "app.results:GuardedRedisBackend"

    @cached_property
    def redis(self) -> Redis:
        """This app's Redis connection pool (the broker's Redis)."""
        return connect(self.settings)

    @cached_property
    def replication(self) -> Replication:
        """Under Sentinel, whether a replica has this process's writes (app/connection.py)."""
        return Replication(self.redis, self.settings)

    @cached_property
    def templates(self) -> Templates:
        return self.settings.templates()

    @cached_property
    def records(self) -> JobRecords:
        return JobRecords(self.redis, self.settings.result_expires)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.redis, self.fleet)

    @cached_property
    def intake(self) -> Intake:
        settings = self.settings
        return Intake(self.redis, settings.queue_name, self.records, self.dispatcher, self.templates,
                      settings.request_limits, self.backend)

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.redis, self.settings.result_expires)

    @cached_property
    def fleet(self) -> Fleet:
        return Fleet(self.redis, self.settings.worker_heartbeat)

    @cached_property
    def statuses(self) -> StatusReader:
        shared = self.conf.result_backend == self.conf.broker_url
        return StatusReader(self, Snapshots(self.redis, self.fleet), shared, self.settings.status_cache)

    @cached_property
    def webhooks(self) -> Outbox:
        return Outbox(self.redis, self.settings.webhook_retry_hours)

    @cached_property
    def outputs(self) -> OutputStore:
        settings = self.settings
        return output_store(settings.output_store, settings.result_expires, self.redis, settings.output_dir)

    @cached_property
    def inputs(self) -> InputImages:
        return InputImages(self.redis, self.settings.result_expires)

    @cached_property
    def previews(self) -> Previews:
        return Previews(self.redis, self.settings.preview_ttl)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """A job sent by name through this app is taken into the ready index at once (a queue position from the
        moment it is sent); what other programs send is taken in by the workers' intake."""
        result = super().send_task(name, args, kwargs, **options)
        if name == TASK_NAME and options.get("queue", self.settings.queue_name) == self.settings.queue_name:
            try:
                self.intake.take_in()
            except (RedisError, OSError) as exc:  # it is in the queue: a worker's intake takes it in shortly
                log.warning("job %s: could not take it in now (%s); the workers' intake will", result.id, exc)
        return result

    def close(self) -> None:
        """Also stops the status reader's caches and closes this app's Redis pool."""
        if "statuses" in self.__dict__:
            self.statuses.close()
        if "redis" in self.__dict__:
            self.redis.close()
        super().close()


def create_celery(settings: Settings) -> Text2ImgCelery:
    return Text2ImgCelery(settings)


celery = create_celery(Settings.from_env())
