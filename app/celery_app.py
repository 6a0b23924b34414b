"""The Celery app: made from a Settings object, it is also where a process finds the Redis-backed parts of the
project (job records, leases, statuses, outputs ...), each built once per app on the app's own connection pool.

`celery` is the one module-level object: the app that `celery --app app.celery_app` (Flower) loads, built from the
environment. Everything else takes an app (or its parts) as an argument; `create_celery(settings)` makes another,
so that two differently configured apps can live in one process."""
from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery
from redis import Redis

from app.connection import connect
from app.fleet import Fleet
from app.idempotency import IdempotencyKeys
from app.inputs import InputImages
from app.outputs import OutputStore, output_store
from app.previews import Previews
from app.records import JobRecords
from app.templates import Templates
from app.validation import is_job_id
from app.settings import Settings
from app.snapshot import Snapshots
from app.status_reader import StatusReader
from celeryconfig import celery_settings

TASK_NAME = "text2img.generate"
RECORDED_HEADER = "t2i_recorded"  # set by app.jobs.submit, which records the job before sending it


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
        return connect(self.settings.redis_url)

    @cached_property
    def templates(self) -> Templates:
        return self.settings.templates()

    @cached_property
    def records(self) -> JobRecords:
        return JobRecords(self.redis, self.settings.result_expires)

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
    def outputs(self) -> OutputStore:
        settings = self.settings
        return output_store(settings.output_store, settings.result_expires, self.redis, settings.output_dir)

    @cached_property
    def inputs(self) -> InputImages:
        return InputImages(self.redis, self.settings.result_expires)

    @cached_property
    def previews(self) -> Previews:
        return Previews(self.redis, self.settings.preview_ttl)

    def close(self) -> None:
        """Also stops the status reader's caches and closes this app's Redis pool."""
        if "statuses" in self.__dict__:
            self.statuses.close()
        if "redis" in self.__dict__:
            self.redis.close()
        super().close()

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """A job sent with a raw `send_task` is known (and has a queue position) from the moment it is sent."""
        result = super().send_task(name, args, kwargs, **options)
        if name == TASK_NAME and not (options.get("headers") or {}).get(RECORDED_HEADER):
            self._record_raw_send(result.id, args, kwargs)
        return result

    def _record_raw_send(self, job_id: str, args: Any, kwargs: Any) -> None:
        if is_job_id(job_id) and not self.records.job(job_id):
            request = args[0] if isinstance(args, (list, tuple)) and len(args) == 1 and isinstance(args[0], dict) \
                else {}
            self.records.record_enqueued(job_id, {**request, **(kwargs if isinstance(kwargs, dict) else {})})


def create_celery(settings: Settings) -> Text2ImgCelery:
    return Text2ImgCelery(settings)


celery = create_celery(Settings.from_env())
