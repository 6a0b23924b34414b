"""The intake: every job enters through the Celery queue QUEUE_NAME, whoever sent it (the web tier, the Python
client, a program sending the task by name with plain Celery, a retry), and the intake moves each message, oldest
first, into the ready index (app/dispatch.py), with its priority, its client and what it needs.

Whoever submits takes in at once (app/jobs.py), so a job has its queue position from the moment its submit
answers; every GPU worker and the reaper also look at the queue a few times a second, for messages sent by
anything else. Each move is one Lua script that first checks the message is still the oldest one, so two
processes never move one message twice, and a process that dies mid-way leaves the message where it was."""
from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Any

import redis

from app.capabilities import needs_of
from app.dispatch import Dispatcher, Entry
from app.records import JobRecords
from app.request import DEFAULT_PRIORITY, parse_request
from app.templates import Templates
from app.validation import RequestError, RequestLimits, invalid_job_id, is_job_id

log = logging.getLogger("app.intake")

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis transport keeps a list per step: `queue`, `queue\x06\x163`, ...
PRIORITY_SEPARATOR = "\x06\x16"
INTERVAL = 0.25  # seconds between a background intake's looks at the queue


def queue_lists(queue: str) -> list[str]:
    return [queue] + [f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS[1:]]


class Intake:
    """queue: QUEUE_NAME; templates and limits: to read what each job needs."""

    def __init__(self, client: redis.Redis, queue: str, records: JobRecords, dispatcher: Dispatcher,
                 templates: Templates, limits: RequestLimits, backend: Any):
        self.redis = client
        self.backend = backend  # Celery's result backend: a task whose id is not a job's fails there alone
        self.lists = queue_lists(queue)
        self.records = records
        self.dispatcher = dispatcher
        self.templates = templates
        self.limits = limits

    def take_in(self, limit: int = 1000) -> int:
        """Moves up to `limit` messages from the queue into the index; returns how many."""
        moved = 0
        pipe = self.redis.pipeline(transaction=False)
        for queue_list in self.lists:
            pipe.lindex(queue_list, -1)
        for queue_list, raw in zip(self.lists, pipe.execute()):  # the oldest message of each list, in one trip
            while raw is not None and moved < limit:
                entry = self.entry(raw)
                if entry is None or not is_job_id(entry.job_id):
                    self._drop(queue_list, raw, entry)
                elif self.dispatcher.take_in(queue_list, raw, entry) != "moved":
                    moved += 1
                raw = self.redis.lindex(queue_list, -1)
        return moved

    def entry(self, raw: bytes) -> Entry | None:
        """The job a message carries, or None for a message that is not one of ours (it is dropped, logged)."""
        try:
            message = json.loads(raw)
            headers, body, properties = message["headers"], message["body"], message["properties"]
            if not (isinstance(headers, dict) and isinstance(properties, dict) and isinstance(body, str)):
                raise TypeError("its headers and properties must be objects, its body a string")
            if properties.get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, kwargs, _ = json.loads(body)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("a message in %s is not a Celery task message (%r); dropped: %.200r", self.lists[0], exc, raw)
            return None
        job_id = str(headers.get("id"))
        headers["eta"] = None  # dispatched when a GPU is free: a countdown would keep a worker's slot waiting
        fields = {**(args[0] if len(args) == 1 and isinstance(args[0], dict) else {}),
                  **(kwargs if isinstance(kwargs, dict) else {})}
        if not is_job_id(job_id):
            return Entry(job_id, DEFAULT_PRIORITY, "", (), "", message)
        self.records.ensure_record(job_id, fields)
        return self._entry(job_id, fields, message)

    def _entry(self, job_id: str, fields: dict[str, Any], message: dict[str, Any]) -> Entry:
        client = self.records.client_of(job_id) or ""
        try:
            request = parse_request(fields, self.limits, self.templates, raw_allowed=True)
        except RequestError:
            return Entry(job_id, DEFAULT_PRIORITY, client, (), "", message)  # its task fails it, naming the fields
        needs, checkpoint = needs_of(request.graph(job_id))
        return Entry(job_id, request.priority, client or request.client or "", needs, checkpoint, message)

    def _drop(self, queue_list: str, raw: bytes, entry: Entry | None) -> None:
        """Not a job: a message that is not a task's, or a task whose id is not a UUID (it fails, only Celery's
        result key is written: no job key is made from such an id)."""
        if self.redis.lrem(queue_list, -1, raw) and entry is not None:
            log.warning("task %.64r is not a job: %s", entry.job_id, invalid_job_id(entry.job_id))
            self.backend.mark_as_failure(entry.job_id, ValueError(invalid_job_id(entry.job_id)))


def take_in_forever(intake: Intake, name: str, stopped: threading.Event) -> None:
    """A background intake: every INTERVAL seconds, whatever the queue holds."""
    while not stopped.wait(INTERVAL):
        try:
            intake.take_in()
        except (redis.RedisError, OSError) as exc:
            log.warning("%s: intake failed: %s", name, exc)
