"""Batch submit: many jobs checked as one (all or nothing) and queued in one round trip to Redis. What
`POST /api/jobs/batch` and `Client.submit_many` both call; `app.jobs.submit` queues one job.

- Every request is checked as `submit` checks one (parse_request, the token's client, its webhook URL, an uploaded
  image it names, a known GPU that can run it) before anything is stored. One bad request refuses the batch:
  RequestError naming every bad field of every bad request as `requests[<index>].<field>`, and nothing is queued.
- Each job is an ordinary Celery task message, named text2img.generate, with the job id as task id, built by
  Celery's own `app.amqp.create_task_message` and kombu's channel as `send_task` builds it. The message goes
  straight into the ready index (app/dispatch.py: the take-in script's own function, which a message taken off the
  Celery queue also goes through), so workers, Flower and the result backend see an ordinary task.
- The records of the whole batch (as `records.record_enqueued` writes one) and its take-in go to Redis in one
  pipeline, in the batch's order: queue positions follow it, with priorities and fair shares as for single submits.
- No input image is uploaded in a batch; a request may name an image uploaded before (img2img's
  `input_image: <id>`), as a JSON request to POST /api/jobs may.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from celery.utils.saferepr import saferepr
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps

from app.capabilities import MODEL_INPUTS, needs_of
from app.celery_app import TASK_NAME, Text2ImgCelery
from app.dispatch import Entry
from app.jobs import IdempotencyConflict, _fingerprint, check_queueable
from app.records import job_key
from app.request import JobRequest, WorkflowsNotAllowed, parse_request
from app.routing import NoCapableGPU, check_runnable
from app.validation import RequestError
from app.workflow import node_ids_by_title

log = logging.getLogger("app.batch")

MAX_REQUESTS = 1000  # requests in one batch
EVENTS_PER_MESSAGE = 100  # task-sent events published in one message


@dataclass(frozen=True)
class _Job:
    job_id: str
    request: JobRequest
    kwargs: dict[str, Any]  # the request as it is queued and recorded (request.to_dict())
    client: str | None  # the client it is recorded for: the token's, or the request's
    entry: Entry
    sent_event: dict[str, Any] | None  # Celery's task-sent event (task_send_sent_event), for Flower


def submit_many(app: Text2ImgCelery, many: Any, client: str | None = None, idempotency_key: str | None = None,
                raw_allowed: bool = False) -> list[tuple[str, JobRequest]]:
    """Validate every request of `many` (a list of 1 to MAX_REQUESTS request objects), then queue them all, in
    order; returns (job id, request with its seed) for each. Raises RequestError naming `requests[<i>].<field>`
    (WorkflowsNotAllowed if a request is a raw workflow the caller may not send; NoCapableGPU if every bad
    request is one no known GPU can run), and then nothing is queued. client, idempotency_key (the whole batch
    is replayed) and raw_allowed as for app.jobs.submit. Every job has its queue position when this returns."""
    if not isinstance(many, list) or not 1 <= len(many) <= MAX_REQUESTS:
        got = f"got {len(many)}" if isinstance(many, list) else "missing" if many is None else \
            f"got {type(many).__name__}"
        raise RequestError([{"field": "requests", "message": f"must be a list of 1 to {MAX_REQUESTS} job requests "
                                                             f"({got})"}])
    job_ids = [str(uuid.uuid4()) for _ in many]
    checked = _checked(app, many, job_ids, client, raw_allowed)  # before anything is stored
    if idempotency_key is not None:
        fingerprint = _fingerprint(many, None)  # type: ignore[arg-type]
        earlier = app.idempotency.claim(client, idempotency_key, fingerprint, " ".join(job_ids))
        if earlier is not None:
            return _replayed(app, earlier, fingerprint)
    try:
        jobs = _messages(app, checked, client)
        _queue(app, jobs)
    except Exception:
        if idempotency_key is not None:
            app.idempotency.release(client, idempotency_key)
        raise
    _kept_through_failover(app, jobs)
    _announce(app, [job.sent_event for job in jobs if job.sent_event is not None])
    log.info("%d jobs queued in a batch for %s: %s ... %s", len(jobs), client or "anyone", jobs[0].job_id,
             jobs[-1].job_id)
    return [(job.job_id, job.request) for job in jobs]


def _checked(app: Text2ImgCelery, many: list[Any], job_ids: list[str], client: str | None,
             raw_allowed: bool) -> list[tuple[str, JobRequest, tuple[tuple[str, ...], str]]]:
    """(job id, request, what it needs and its checkpoint) for every request, or the errors of them all."""
    settings = app.settings
    checked, errors, forbidden, refused = [], [], False, False
    checked_urls: set[str] = set()
    needs = _Needs(app)
    for index, (fields, job_id) in enumerate(zip(many, job_ids)):
        try:
            request = parse_request(fields, settings.request_limits, app.templates, raw_allowed)
            check_queueable(app, request, client, checked_urls=checked_urls)
            checked.append((job_id, request, needs.of(request, job_id)))
        except RequestError as exc:
            forbidden = forbidden or isinstance(exc, WorkflowsNotAllowed)
            refused = refused or not isinstance(exc, NoCapableGPU)
            errors += [{**error, "field": f"requests[{index}]" + ("" if error["field"] == "(body)" else
                                                                  f".{error['field']}")} for error in exc.errors]
    if errors:
        raise (WorkflowsNotAllowed if forbidden else RequestError if refused else NoCapableGPU)(errors)
    return checked


class _Needs:
    """What each job of a batch needs and the checkpoint it loads (needs_of), once a known GPU is found that can
    run it (check_runnable): worked out from its graph once per kind of job. Two jobs of one template whose
    parameters that fill model inputs (a checkpoint, a LoRA ...) have the same values, and that leave the same
    parameters empty, have graphs of the same nodes, inputs and model files: what one needs, the other does, and a
    GPU that can run one can run the other. A raw workflow's graph is looked at for each job."""

    def __init__(self, app: Text2ImgCelery):
        self.app = app
        self.found: dict[Any, tuple[tuple[str, ...], str]] = {}
        self.model_params: dict[int, tuple[str, ...]] = {}

    def of(self, request: JobRequest, job_id: str) -> tuple[tuple[str, ...], str]:
        """Raises NoCapableGPU."""
        key = self._kind(request)
        if key is not None and key in self.found:
            return self.found[key]
        graph = request.graph(job_id)
        check_runnable(self.app.fleet, request, graph)
        found = needs_of(graph)
        if key is not None:
            self.found[key] = found
        return found

    def _kind(self, request: JobRequest) -> Any:
        template = request.template
        if template is None:
            return None
        if id(template) not in self.model_params:
            titles, graph = node_ids_by_title(template.graph), template.graph
            self.model_params[id(template)] = tuple(
                param.name for param in template.params.values()
                if any((graph[titles[title][0]]["class_type"], input_name) in MODEL_INPUTS
                       for title, input_name in param.fills))
        values = tuple(request.params.get(name) for name in self.model_params[id(template)])
        if not all(isinstance(value, (str, int, float, type(None))) for value in values):
            return None
        return id(template), values, frozenset(name for name, value in request.params.items() if value is None)


def _messages(app: Text2ImgCelery, checked: list[tuple[str, JobRequest, tuple[tuple[str, ...], str]]],
              client: str | None) -> list[_Job]:
    """Each job's Celery task message, as send_task(TASK_NAME, kwargs=request, task_id=job id) makes it (but for
    its delivery tag, which dispatch gives each delivery), and what the index keeps of it."""
    amqp, conf = app.amqp, app.conf
    queue = conf.task_default_queue
    reply_to, origin = app.thread_oid, None
    delivery_mode = maybe_delivery_mode(conf.task_default_delivery_mode)
    jobs = []
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        for job_id, request, (needs, checkpoint) in checked:
            kwargs = request.to_dict()
            text = repr(kwargs)  # what Flower shows (saferepr's text, but for its escapes and its time)
            if len(text) > amqp.kwargsrepr_maxsize:
                text = saferepr(kwargs, amqp.kwargsrepr_maxsize)
            headers, properties, body, sent_event = amqp.create_task_message(
                job_id, TASK_NAME, (), kwargs, reply_to=reply_to, argsrepr="()", kwargsrepr=text, origin=origin,
                ignore_result=None, create_sent_event=conf.task_send_sent_event)
            origin = headers["origin"]
            content_type, encoding, data = dumps(body, serializer=conf.task_serializer)
            message = channel.prepare_message(data, 0, content_type, encoding, headers,
                                              {**properties, "delivery_mode": delivery_mode})
            message["body"], message["properties"]["body_encoding"] = channel.encode_body(message["body"],
                                                                                          channel.body_encoding)
            message["properties"]["delivery_info"] = {"exchange": "", "routing_key": queue}
            owner = client or request.client
            entry = Entry(job_id, request.priority, owner or "", needs, checkpoint, message)
            if sent_event is not None:
                sent_event.update(queue=queue, exchange="", routing_key=queue)
            jobs.append(_Job(job_id, request, kwargs, owner, entry, sent_event))
    return jobs


def _queue(app: Text2ImgCelery, jobs: list[_Job]) -> None:
    """The records, then the take-in, of every job, in one pipeline; a job that could not be queued leaves no
    record."""
    pipe = app.redis.pipeline(transaction=False)
    app.records.record_many(pipe, [(job.job_id, job.kwargs, json.dumps(job.kwargs), job.client) for job in jobs])
    app.dispatcher.take_in_many([job.entry for job in jobs], pipe)
    try:
        pipe.execute()
    except Exception:
        _forget_unqueued(app, jobs)
        raise


def _announce(app: Text2ImgCelery, events: list[dict[str, Any]]) -> None:
    """Celery's task-sent event of each queued job, as send_task sends one (task_send_sent_event: Flower shows the
    job from then on), buffered by Celery's event dispatcher into messages of EVENTS_PER_MESSAGE events (routing
    key task.multi, as a worker buffers its task events; every event receiver takes such a list). The jobs are
    queued whether or not they can be sent."""
    if not events:
        return
    try:
        with app.producer_or_acquire() as producer, app.events.Dispatcher(
                channel=producer.channel, buffer_group={"task"}, buffer_limit=EVENTS_PER_MESSAGE,
                buffer_while_offline=False) as dispatcher:
            for event in events:
                dispatcher.send("task-sent", **event)
            dispatcher.flush()
    except Exception as exc:
        log.warning("the task-sent events of a batch of %d jobs were not sent (%s); the jobs are queued",
                    len(events), exc)


def _unqueued(app: Text2ImgCelery, jobs: list[_Job]) -> list[_Job]:
    """The jobs that Redis does not show taken into the index."""
    pipe = app.redis.pipeline(transaction=False)
    for job in jobs:
        pipe.hexists(job_key(job.job_id), "order")
    return [job for job, taken in zip(jobs, pipe.execute()) if not taken]


def _forget_unqueued(app: Text2ImgCelery, jobs: list[_Job]) -> None:
    try:
        app.records.forget_many([(job.job_id, job.client) for job in _unqueued(app, jobs)])
    except Exception as exc:  # Redis is gone: the records expire with the results
        log.warning("could not forget the records of a batch that was not queued: %s", exc)


def _kept_through_failover(app: Text2ImgCelery, jobs: list[_Job]) -> None:
    """As app.jobs does for one job: under Sentinel, the jobs a failover took back are queued again."""
    if app.replication.confirmed():
        return
    lost = _unqueued(app, jobs)
    if not lost:
        return
    log.warning("%d jobs of a batch: Redis lost their submit (a failover before a replica had it); queueing them "
                "again", len(lost))
    pipe = app.redis.pipeline(transaction=False)
    for job in lost:
        pipe.exists(job_key(job.job_id))
    unrecorded = [job for job, recorded in zip(lost, pipe.execute()) if not recorded]
    pipe = app.redis.pipeline(transaction=False)
    if unrecorded:
        app.records.record_many(pipe, [(job.job_id, job.kwargs, json.dumps(job.kwargs), job.client)
                                       for job in unrecorded])
    app.dispatcher.take_in_many([job.entry for job in lost], pipe)
    pipe.execute()


def _replayed(app: Text2ImgCelery, earlier: tuple[str, str], fingerprint: str) -> list[tuple[str, JobRequest]]:
    """The batch an earlier request with this Idempotency-Key queued."""
    job_ids, earlier_fingerprint = earlier[0].split(" "), earlier[1]
    if earlier_fingerprint != fingerprint:
        raise IdempotencyConflict(f"this Idempotency-Key was used for another request (job {job_ids[0]} ...)")
    pipe = app.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(job_key(job_id), "request")
    stored = pipe.execute()
    if any(raw is None for raw in stored):
        raise IdempotencyConflict(f"this Idempotency-Key was used for a batch (job {job_ids[0]} ...) that is not "
                                  f"recorded yet")
    log.info("a retried batch of %d jobs with its Idempotency-Key", len(job_ids))
    limits, templates = app.settings.request_limits, app.templates
    return [(job_id, parse_request(json.loads(raw), limits, templates, raw_allowed=True))
            for job_id, raw in zip(job_ids, stored)]
