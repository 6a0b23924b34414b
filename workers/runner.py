"""One job's whole life on one ComfyUI: submit (or resume), follow, cancel or time out, collect and store outputs.

The job id is ComfyUI's prompt_id. Its websocket's client id is that of a socket opened ahead of the job (a spare,
workers/comfyui/spare.py). Before submitting, the job records which ComfyUI gets it, under which client id (its
start does, through the lease: an Outlet); a resumed job (its worker died, and the reaper handed it back) first
asks that ComfyUI whether the prompt is done (collect it from the history), running or queued (follow it again),
or unknown (submit it, recording its own assignment): a finished prompt is never generated twice.

The runner holds the job's lease (app/leases.py) throughout, kept alive by the worker's lease refresher (a
LeaseKeeper); it checks the lease while following, and confirms it with Redis before storing outputs and before
submitting, unless its start took it a moment before. Its state writes are fenced by the same lease
(app/results.py).

Near its end a job lets the worker take the next one (workers/pipeline.py), whose prompt then waits in
ComfyUI's queue. The time limit counts from the prompt's `execution_start` on the GPU; the wait in ComfyUI's
queue has a limit of its own."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from celery.worker import state as worker_state

from app.images import InvalidImage
from app.leases import LeaseKeeper
from app.request import JobRequest
from app.settings import Settings
from app.workflow import node_titles
from workers.cleanup import Leftovers
from workers.comfyui import (ComfyUIClient, ComfyUIError, ComfyUIUnavailable, Event, Failed, Idle, Interrupted, Preview,
                             PromptLost, Reconnected, Started, Succeeded, Terminal)
from workers.comfyui.history import terminal_from_history
from workers.comfyui.spare import Spare
from workers.gpu_app import GPUWorkerApp
from workers.progress import ProgressReporter

log = logging.getLogger("workers.runner")

CHECK_EVERY = 0.25  # seconds between cancel / deadline / lease checks while following


class JobFailed(Exception):
    """Ends the job in FAILURE; args are (reason, details) so the status model can show both.
    comfyui_error: the kind of ComfyUI error behind it, if one is (for the worker's metrics)."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None, comfyui_error: str | None = None):
        super().__init__(reason, details or {})
        self.reason = reason
        self.comfyui_error = comfyui_error


class JobCancelled(Exception):
    pass


class ComfyUIStuck(JobFailed):
    """ComfyUI did not stop a prompt it was asked to stop: the worker must not give it more work. A job that was
    being cancelled still ends CANCELLED (as its cancel answered); one past a limit ends FAILURE."""

    def __init__(self, reason: str, details: dict[str, Any], cancelled: bool):
        super().__init__(reason, details, comfyui_error="stuck")
        self.cancelled = cancelled


@dataclass(frozen=True)
class Limits:
    """Seconds: on the GPU (from execution_start), waiting in ComfyUI's queue, and for an interrupt to work."""
    time_limit: float
    queue_wait_limit: float
    interrupt_grace: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(settings.job_time_limit, settings.queue_wait_limit, settings.interrupt_grace)


@dataclass(frozen=True)
class Outlet:
    """Where this execution submits the job's prompt if no earlier execution's is there to resume: this worker's
    ComfyUI, under the client id of a socket opened ahead of the job (a spare) or, with none, of its own. Taken
    before the start, which records it as the job's assignment (workers/start.py)."""
    comfyui_url: str
    client_id: str
    worker: str
    spare: Spare | None

    @classmethod
    def take(cls, app: GPUWorkerApp, worker: str) -> "Outlet":
        url = app.settings.worker_comfyui_url().rstrip("/")
        spare = app.spare_sockets.take(url)
        return cls(url, spare.client_id if spare else str(uuid.uuid4()), worker, spare)

    @property
    def assignment(self) -> dict[str, str]:
        return {"comfyui_url": self.comfyui_url, "comfyui_client_id": self.client_id, "assigned_worker": self.worker}

    def give_back(self, app: GPUWorkerApp) -> None:
        """Not used: its spare is kept for the next job."""
        if self.spare is not None:
            app.spare_sockets.give_back(self.comfyui_url, self.spare)


def cancelled(app: GPUWorkerApp, job_id: str) -> bool:
    """A cancel (DELETE, the CLI: the job's cancel flag) or a revoke of the task (Flower's Revoke or Terminate,
    `celery control revoke`: this worker's revoked set)."""
    return job_id in worker_state.revoked or app.records.cancel_requested(job_id)


class JobRunner:
    """app: the worker's Celery app (its settings name this GPU's ComfyUI, the limits and the progress interval)."""

    def __init__(self, app: GPUWorkerApp, job_id: str, request: JobRequest, record: dict[str, Any], worker: str,
                 write_progress: Callable[[dict[str, Any]], bool], lease: LeaseKeeper, outlet: Outlet,
                 client_factory: Callable[..., ComfyUIClient] = ComfyUIClient,
                 write_progress_later: Callable[[dict[str, Any]], Callable[[], bool]] | None = None):
        settings = app.settings
        self.outlet = outlet
        self.app = app
        self.records = app.records
        self.job_id = job_id
        self.request = request
        self.comfyui_url = settings.worker_comfyui_url()
        self.comfyui_dir = Path(settings.comfyui_dir) if settings.comfyui_dir else None
        self.leftovers: Leftovers | None = None  # what the prompt left on the ComfyUI that has it
        self.worker = worker
        self.lease = lease
        self.limits = Limits.from_settings(settings)
        self.client_factory = client_factory
        self.slots = app.slots
        self.metrics = app.metrics
        self.template = request.name
        self.graph = request.graph(job_id)
        self.progress = ProgressReporter(write_progress, self.graph, node_titles(self.graph), worker,
                                         self.comfyui_url, settings.progress_interval,
                                         write_later=write_progress_later)
        self.waiting_since = time.time()  # in ComfyUI's queue, until execution_start
        self.running_since: float | None = None  # execution_start, by the wall clock (kept for a resumed job)
        self.record = record  # as the start read it (workers/start.py): its started_at is final then
        self.submitted_at = record.get("created_at", time.time())  # the job's creation
        self.on_gpu = False  # this execution saw the prompt start, and not yet end
        self.gpu_finished_at: float | None = None  # monotonic: when this execution learned the prompt had ended
        self.stopping: str | None = None  # why we asked ComfyUI to stop the prompt
        self.stop_deadline = 0.0
        self.last_check = 0.0

    def context(self) -> str:
        return f"job {self.job_id} on {self.worker} ({self.comfyui_url})"

    def run(self) -> dict[str, Any]:
        """Returns the SUCCESS result, or raises JobFailed, JobCancelled, LeaseLost, ComfyUIUnavailable/PromptLost.
        (A cancel made before the start, a REVOKED write, had the start refused: only a revoke is left to see.)"""
        if self.job_id in worker_state.revoked:
            raise JobCancelled(self.job_id)
        record = self.record
        assigned = record.get("comfyui_url")
        if assigned and not self._assigned_at_start():
            client = self.client_factory(assigned, client_id=record.get("comfyui_client_id") or self.job_id)
            state = self._state_where_assigned(client)
            if state is not None and state.status == "done":
                log.info("%s: prompt already finished on %s, collecting it", self.context(), assigned)
                self.outlet.give_back(self.app)
                return self._finish(client, terminal_from_history(self.job_id, state.history or {}))
            if state is not None and state.status in ("running", "queued"):
                log.info("%s: prompt is %s on %s, following it again", self.context(), state.status, assigned)
                if state.status == "running":
                    self.running_since = float(record.get("running_since") or time.time())
                self.outlet.give_back(self.app)
                return self._follow(client, submit=False)
        outlet = self.outlet
        client = self.client_factory(outlet.comfyui_url, client_id=outlet.client_id)
        return self._follow(client, submit=True, ws=outlet.spare.ws if outlet.spare else None)

    def _assigned_at_start(self) -> bool:
        """Whether the record's assignment is the one this execution's start recorded (not an earlier one's)."""
        return (self.record.get("comfyui_url"), self.record.get("comfyui_client_id")) == \
            (self.outlet.comfyui_url, self.outlet.client_id)

    def clean_up(self) -> None:
        """After the job's terminal write: its history entry, and its files where this worker reaches them, are
        cleaned up in a moment (workers/cleanup.py)."""
        if self.leftovers is None:
            return
        own = self.leftovers.comfyui_url == self.comfyui_url
        self.app.cleaner.add(self.job_id, self.leftovers, self.comfyui_dir if own else None)

    def _upload_name(self) -> str:
        return f"{self.job_id}.png"

    def _state_where_assigned(self, client: ComfyUIClient):
        try:
            return client.prompt_state(self.job_id)
        except ComfyUIUnavailable:
            # ComfyUI keeps its queue in memory: if it is down, the prompt is gone with it.
            log.warning("%s: assigned ComfyUI %s is unreachable; submitting again", self.context(), client.url)
            return None

    def _follow(self, client: ComfyUIClient, submit: bool, ws: Any = None) -> dict[str, Any]:
        """ws: a socket already open under the client's id (a spare)."""
        # The upload, by this execution or an earlier one, is named after the job (and overwritten, not renamed).
        self.leftovers = Leftovers(client.url, [self._upload_name()] if self.request.input_image else [])
        with client.stream(ws) as stream:
            if submit:
                self._submit(client)
                self.app.spare_sockets.refill(client.url, client.stream_policy())  # for the next job
            self.progress.phase("submitted", "Submitted to the GPU")
            terminal: Terminal | None = None
            try:
                # A resumed job missed the messages before it came back: its outputs come from the history.
                for event in stream.follow(self.job_id, heartbeat=CHECK_EVERY, resumed=not submit):
                    self._check(client)
                    if isinstance(event, Preview):
                        self.app.previews.save(self.job_id, event.mime, event.data)
                    elif isinstance(event, Idle):
                        self.progress.flush()
                    elif isinstance(event, Terminal):
                        terminal = event
                        self._left_gpu()
                    else:
                        self._on_progress(event)
            except PromptLost:
                if self.stopping:
                    self._stopped()
                raise
            finally:
                self._left_gpu()
        assert terminal is not None
        return self._finish(client, terminal)

    def _on_progress(self, event: Event) -> None:
        if isinstance(event, Started):
            self.running_since = time.time()
            self.records.record_running(self.job_id, self.running_since)
            self.metrics.started(self.template, self.submitted_at)
            self.on_gpu = True
        elif isinstance(event, Reconnected):
            self.metrics.reconnected()
        self.progress.on_event(event)
        eta = self.progress.eta()
        if eta is not None and eta <= self.slots.lookahead:
            self.slots.near_end(self.job_id)

    def _submit(self, client: ComfyUIClient) -> None:
        graph = self.graph
        if self.request.input_image is not None:
            data = self.app.inputs.load(self.request.input_image)
            if data is None:
                raise JobFailed("the input image has expired or was never uploaded")
            name = client.upload_image(data, self._upload_name())
            graph = self.request.graph(self.job_id, image_name=name)
        # Which ComfyUI has the prompt, for a redelivered job to ask: recorded by the start through the lease a moment
        # ago, or (a resumed job submitting anew, or after an upload, which can take long) with its confirmation now.
        assignment = self.outlet.assignment  # the client's: only the outlet's client submits
        if self._assigned_at_start() and self.request.input_image is None:
            self.lease.ensure_held()
        else:
            self.lease.ensure_held(confirm=True, record=assignment)
        if not self.app.replication.confirmed():
            # Under Sentinel, no replica has said it has the lease and this record: a failover meanwhile may have
            # taken them back (app/connection.py), and another execution could submit the prompt elsewhere.
            self.lease.ensure_held(confirm=True, record=assignment)
        client.submit(graph, prompt_id=self.job_id)
        self.waiting_since = time.time()
        log.info("%s: submitted", self.context())

    def _check(self, client: ComfyUIClient) -> None:
        """Every CHECK_EVERY seconds: is the lease still ours; stop the prompt on a cancel request or past a limit;
        give up on a ComfyUI that does not stop it."""
        now = time.monotonic()
        if now - self.last_check < CHECK_EVERY:
            return
        self.last_check = now
        self.lease.ensure_held()
        if self.stopping:
            if now > self.stop_deadline:
                raise ComfyUIStuck(f"ComfyUI did not stop the prompt within {self.limits.interrupt_grace:g} s "
                                   f"(asked because it was {self.stopping})", self._details(),
                                   cancelled=self.stopping == "cancelled")
            return
        self.stopping = self._reason_to_stop()
        if self.stopping is None:
            return
        log.info("%s: %s, stopping its prompt", self.context(), self.stopping)
        self.stop_deadline = now + self.limits.interrupt_grace
        client.cancel(self.job_id)
        if client.prompt_state(self.job_id).status in ("unknown", "done"):
            self._stopped()  # it was still waiting in ComfyUI's queue: deleted, no end message will come

    def _reason_to_stop(self) -> str | None:
        if self._cancelled():
            return "cancelled"
        if self.running_since is not None:
            if time.time() - self.running_since > self.limits.time_limit:
                return "timed out"
        elif time.time() - self.waiting_since > self.limits.queue_wait_limit:
            return "waiting too long"
        return None

    def _cancelled(self) -> bool:
        return cancelled(self.app, self.job_id)

    def _stopped(self) -> None:
        if self.stopping == "cancelled":
            raise JobCancelled(self.job_id)
        if self.stopping == "waiting too long":
            raise JobFailed(f"waited more than {self.limits.queue_wait_limit:g} s in ComfyUI's queue without "
                            f"starting", self._details())
        raise JobFailed(f"timed out after {self.limits.time_limit:g} s on the GPU", self._details())

    def _left_gpu(self) -> None:
        if self.on_gpu:
            self.on_gpu = False
            self.metrics.ended(self.template, time.time() - (self.running_since or time.time()))

    def _details(self, **extra: Any) -> dict[str, Any]:
        return {"worker": self.worker, "comfyui_url": self.comfyui_url, **extra}

    def _finish(self, client: ComfyUIClient, terminal: Terminal) -> dict[str, Any]:
        self.gpu_finished_at = time.monotonic()
        if self.stopping and not isinstance(terminal, Succeeded):
            self._stopped()  # however ComfyUI reports a prompt we stopped (an interrupt may surface as an error)
        if isinstance(terminal, Failed):
            reason = f"node {terminal.node_id} ({terminal.node_type}) raised {terminal.exception_type}: " \
                     f"{terminal.exception_message.strip()}"
            raise JobFailed(reason, self._details(node_id=terminal.node_id, node_type=terminal.node_type,
                                                  exception_type=terminal.exception_type),
                            comfyui_error="execution_error")
        if isinstance(terminal, Interrupted):
            raise JobFailed(f"the prompt was interrupted on {client.url}", self._details(node_id=terminal.node_id),
                            comfyui_error="interrupted")
        assert isinstance(terminal, Succeeded)
        return self._collect(client, terminal)

    def _collect(self, client: ComfyUIClient, terminal: Succeeded) -> dict[str, Any]:
        self.slots.near_end(self.job_id)
        if self.leftovers is not None:
            self.leftovers.outputs = list(terminal.images)
        images = self._download(client, terminal)
        if not terminal.images:
            raise JobFailed(f"ComfyUI {client.url} finished the prompt but produced no images", self._details())
        try:
            self.lease.ensure_held(confirm=True)
            stored = self.app.outputs.save(self.job_id, images)
        except InvalidImage as exc:
            raise JobFailed(f"ComfyUI {client.url} returned an output that is not an image: {exc}", self._details())
        return self._result(client, stored, terminal.source)

    def _download(self, client: ComfyUIClient, terminal: Succeeded) -> list[bytes]:
        """The images, downloaded while the `saving` phase is written. That write is refused once a cancel has
        written REVOKED: it is the cancel check too, made before anything is stored (a cancel wins over a failed
        download)."""
        saving = self.progress.phase_later("saving", f"Saving {len(terminal.images)} image(s)")
        try:
            return [client.download(ref) for ref in terminal.images]
        except ComfyUIError as exc:
            # The images are safe on ComfyUI's disk: hand the job back; its next execution collects the history.
            raise ComfyUIUnavailable(client.url, f"could not download the outputs: {exc.reason}") from exc
        finally:
            if not saving() or self.job_id in worker_state.revoked:
                self.lease.ensure_held()  # refused because another execution has the job: not a cancel
                if self._cancelled():
                    raise JobCancelled(self.job_id)

    def _result(self, client: ComfyUIClient, stored: list, source: str) -> dict[str, Any]:
        record = self.record
        finished = time.time()
        created = record.get("created_at", finished)
        started = record.get("started_at", created)
        return {
            "job_id": self.job_id,
            "images": [{**image.to_dict(), "url": f"/api/jobs/{self.job_id}/images/{image.index}"}
                       for image in stored],
            "seed": self.request.seed,
            "worker": self.worker,
            "comfyui_url": client.url,
            "source": source,
            "started_at": started,
            "finished_at": finished,
            "timings": {"queued": round(started - created, 3), "running": round(finished - started, 3),
                        "total": round(finished - created, 3)},
        }
