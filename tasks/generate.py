"""text2img.generate: the one public task. Its id is the job id everywhere.

An execution takes the job's lease before it does anything, keeps it alive while it runs, and makes every
state write through the lease (app/results.py): its terminal write is the job's only one, or none at all if
the job ended meanwhile or another execution took it over."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from celery import Task, shared_task
from celery.exceptions import Ignore, TaskRevokedError
from celery.states import FAILURE, REVOKED, SUCCESS

from app.celery_app import TASK_NAME
from app.leases import Lease, LeaseKeeper, LeaseLost
from app.request import JobRequest, parse_request
from app.validation import RequestError, invalid_job_id, is_job_id
from app.results import ENDED_BY_TASK, FENCED, TERMINAL, TERMINAL_STATES, WRITTEN
from app.status import progress_summary
from workers.comfyui import ComfyUIError, ComfyUIUnavailable, PromptLost, PromptRejected
from workers.gpu_app import GPUWorkerApp
from workers.health import comfyui_stuck, comfyui_unreachable
from workers.runner import ComfyUIStuck, JobCancelled, JobFailed, JobRunner, Outlet, cancelled
from workers.start import start

log = logging.getLogger("tasks.generate")

EVENT_INTERVAL = 1.0  # seconds between a job's task-progress events within one phase
UNANNOUNCED_PHASES = frozenset({"saving"})  # the job's end, which has an event of its own, follows within moments


@shared_task(name=TASK_NAME, bind=True)
def generate(self: Task, *args: Any, **fields: Any) -> dict[str, Any]:
    """The request as keyword fields (`kwargs=request`), or as one positional dict (`args=[request]`)."""
    job_id = self.request.id
    if not is_job_id(job_id):
        raise JobFailed(invalid_job_id(job_id))
    app: GPUWorkerApp = self.app
    request = _parse(app, args, fields)
    lease = Lease(app.redis, job_id, self.request.hostname, app.settings.lease_ttl)
    outlet = Outlet.take(app, self.request.hostname)
    try:
        started = start(self, request, lease, outlet.assignment)
    except BaseException:
        outlet.give_back(app)
        raise
    if started.seed is not None:
        request = request.with_values(seed=started.seed)
    if started.outcome == TERMINAL:
        lease.release()  # the terminal write ended the lease too, so this copy could take it
    if started.outcome != WRITTEN:
        outlet.give_back(app)
        raise _steps_aside(job_id, self.request.hostname)  # ended, or a live execution holds it: the lease decides
    with LeaseKeeper(lease) as keeper:
        return Execution(self, lease, keeper).run(request, started.record, outlet)


def _parse(app: GPUWorkerApp, args: tuple[Any, ...], fields: dict[str, Any]) -> JobRequest:
    if args and not (len(args) == 1 and isinstance(args[0], dict)):
        raise JobFailed("invalid request: send the request as keyword fields or as one positional dict")
    try:
        return parse_request({**(args[0] if args else {}), **fields}, app.settings.request_limits, app.templates,
                             raw_allowed=True)  # whoever can send a task can run anything
    except RequestError as exc:
        raise JobFailed(f"invalid request: {exc}", {"errors": exc.errors})


def _ended(app: GPUWorkerApp, job_id: str) -> bool:
    return app.statuses.backend_meta(job_id).get("status") in TERMINAL_STATES


def _steps_aside(job_id: str, worker: str) -> Ignore:
    """A copy of a job that has ended, or that a live execution holds."""
    log.info("job %s has ended or runs elsewhere; this copy (%s) steps aside", job_id, worker)
    return Ignore()


class Execution:
    """One execution of the job: runs it, and writes its states fenced by its lease."""

    def __init__(self, task: Task, lease: Lease, keeper: LeaseKeeper):
        self.task = task
        self.app: GPUWorkerApp = task.app
        self.lease = lease
        self.keeper = keeper
        self.job_id = task.request.id
        self.worker = task.request.hostname
        self.runner: JobRunner | None = None
        self.announced: tuple[Any, float] = (None, float("-inf"))  # the phase Flower was told last, and when

    def run(self, request: JobRequest, record: dict[str, Any], outlet: Outlet) -> dict[str, Any]:
        """record: the job's record as its start read it (workers/start.py)."""
        runner = self.runner = JobRunner(self.app, self.job_id, request, record, self.worker, self.write_progress,
                                         self.keeper, outlet, write_progress_later=self.write_progress_later)
        try:
            result = self._run_counting_errors(runner)
        except LeaseLost:
            log.warning("job %s: %s lost its lease; it stops and leaves the job to the execution that took it",
                        self.job_id, self.worker)
            raise Ignore()
        except JobCancelled:
            raise self.cancelled()
        except (ComfyUIUnavailable, PromptLost) as exc:
            raise self.hand_back(exc)
        except ComfyUIStuck as exc:
            log.error("job %s on %s: %s", self.job_id, self.worker, exc.reason)
            comfyui_stuck(self.app.comfyui_health)
            raise self.cancelled() if exc.cancelled else self.fail(exc)
        except PromptRejected as exc:
            raise self.fail(JobFailed(f"ComfyUI rejected the workflow: {exc.reason}",
                                      {"comfyui_url": exc.url, "node_errors": exc.node_errors, "worker": self.worker}))
        except ComfyUIError as exc:
            raise self.fail(JobFailed(str(exc), {"comfyui_url": exc.url, "worker": self.worker}))
        except JobFailed as exc:
            raise self.fail(exc)
        self.end(SUCCESS, result)
        return result

    def _run_counting_errors(self, runner: JobRunner) -> dict[str, Any]:
        try:
            return runner.run()
        except Exception as exc:
            self.app.metrics.comfyui_error(exc)
            raise

    def write_progress(self, meta: dict[str, Any]) -> bool:
        """False once the job has ended (a cancel wrote REVOKED) or another execution took it over."""
        return self._went_on(self._write("PROGRESS", meta), meta)

    def write_progress_later(self, meta: dict[str, Any]) -> Callable[[], bool]:
        """write_progress(), its answer read when the returned function is called (app/results.py write_later)."""
        outcome = self.task.backend.write_later(self.job_id, "PROGRESS", meta, request=self.task.request,
                                                owner=self.lease.owner)
        return lambda: self._went_on(outcome(), meta)

    def _went_on(self, outcome: str, meta: dict[str, Any]) -> bool:
        if outcome == FENCED:
            self.keeper.lost.set()  # another execution has the job: the runner stops at its next check
        if outcome != WRITTEN:
            return False  # a TERMINAL job was cancelled: the runner sees its cancel flag and stops the prompt
        self._announce(meta)
        return True

    def _announce(self, meta: dict[str, Any]) -> None:
        """Flower shows the job's progress as its result (a `task-progress` event): on a new phase, and otherwise
        once every EVENT_INTERVAL, which spares the worker half the CPU of a progress write at every step."""
        now = time.monotonic()
        if meta.get("phase") in UNANNOUNCED_PHASES:
            return
        if meta.get("phase") == self.announced[0] and now - self.announced[1] < EVENT_INTERVAL:
            return
        self.announced = (meta.get("phase"), now)
        self.task.send_event("task-progress", result=progress_summary(meta))

    def end(self, state: str, result: Any) -> None:
        """The terminal write; an execution whose write is refused (the job ended meanwhile, or its lease was lost)
        stands down."""
        outcome = self._write(state, result)
        if state == SUCCESS and outcome == WRITTEN and self.runner and self.runner.gpu_finished_at is not None:
            self.app.metrics.completed(time.monotonic() - self.runner.gpu_finished_at)  # stored: not the clean-up
        if state in TERMINAL_STATES and outcome in (WRITTEN, TERMINAL):
            setattr(self.task.request, ENDED_BY_TASK, True)  # Celery's own write of the outcome is not sent
            if self.runner is not None:
                self._ended_here(state)
        if outcome != WRITTEN:
            log.warning("job %s: %s's %s was not written (%s); standing down", self.job_id, self.worker, state,
                        outcome)
            raise Ignore()

    def _ended_here(self, state: str) -> None:
        if not (self.app.replication.confirmed() or _ended(self.app, self.job_id)):
            # A Redis failover took this end back (app/connection.py), the images stored with it too. The prompt
            # stays in ComfyUI's history: once the lease runs out, the reaper hands the job back and the next
            # execution collects it there. Celery must not write its own state meanwhile.
            log.warning("job %s: Redis lost its %s (a failover); it will be collected again from ComfyUI",
                        self.job_id, state)
            raise Ignore()
        self.runner.clean_up()  # the job is over (by this write, or by an earlier one such as a cancel)

    def cancelled(self) -> Ignore:
        """Flower learns states from events: tell it, even when the cancel itself wrote REVOKED (it sends none).
        Celery's event state orders a custom state (PROGRESS) above REVOKED and lets only RETRY give way to any
        state, so the job steps through RETRY for Flower to show REVOKED."""
        self.task.send_event("task-retried", exception="cancelled", traceback=None)
        self.task.send_event("task-revoked", terminated=False, signum=None, expired=False)
        self.end(REVOKED, TaskRevokedError("cancelled"))
        return Ignore()

    def fail(self, exc: JobFailed) -> JobFailed:
        self.end(FAILURE, exc)
        return exc  # raised for Celery's events and logs; its own FAILURE write is not sent, ours came first

    def hand_back(self, exc: ComfyUIUnavailable | PromptLost) -> Exception:
        """ComfyUI went away: the job goes back to the queue for another GPU (up to COMFYUI_RETRIES times), unless
        it was cancelled meanwhile."""
        self.keeper.ensure_held()
        if isinstance(exc, ComfyUIUnavailable):
            comfyui_unreachable(self.app.comfyui_health, exc.url)
        if cancelled(self.app, self.job_id):
            return self.cancelled()
        self.lease.release()
        failure = JobFailed(f"ComfyUI unreachable: {exc}", {"comfyui_url": exc.url, "worker": self.worker})
        # Through the shared queue, so that the intake puts it back in its old place (app/intake.py); at once:
        # this worker has stopped taking jobs, so another GPU (or this one once its ComfyUI is back) takes it.
        return self.task.retry(exc=failure, queue=self.app.settings.queue_name, countdown=0,
                               max_retries=self.app.settings.comfyui_retries)

    def _write(self, state: str, result: Any) -> str:
        return self.task.backend.write(self.job_id, state, result, request=self.task.request, owner=self.lease.owner)
