"""A GPU worker's own Prometheus metrics, served at http://METRICS_HOST:METRICS_PORT/metrics (a port per worker).

What happens on this worker's GPU: how long jobs waited before the GPU started them, their time on the GPU, how
long storing the outputs took after the GPU had finished, the GPU's busy seconds, ComfyUI's errors by kind and the
websocket's reconnects. Fleet-wide counts (jobs by end state, queue depth, lease recoveries, webhooks) live in
Redis and are served by the web tier (app/fleet_metrics.py)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

from celery import bootsteps
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from workers.comfyui import ComfyUIError, ComfyUIProtocolError, ComfyUIUnavailable, PromptLost, PromptRejected

log = logging.getLogger("workers.metrics")

# Seconds, from a fraction of a second (the simulator) to the job time limit (600 s by default).
DURATIONS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)

QUEUED = Histogram("t2i_job_queued_seconds", "From a job's submission to its prompt starting on this GPU",
                   ["worker", "template"], buckets=DURATIONS)
ON_GPU = Histogram("t2i_job_gpu_seconds", "A prompt's time on this GPU, from execution_start to its end",
                   ["worker", "template"], buckets=DURATIONS)
COMPLETION = Histogram("t2i_job_completion_seconds", "From the prompt's end on the GPU to the job's SUCCESS "
                       "stored (outputs downloaded and saved)", ["worker"],
                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
COMFYUI_ERRORS = Counter("t2i_comfyui_errors_total", "ComfyUI errors met by this worker's jobs, by kind",
                         ["worker", "kind"])
RECONNECTS = Counter("t2i_comfyui_websocket_reconnects_total", "Websocket reconnects while following a prompt",
                     ["worker"])


def comfyui_error_kind(exc: BaseException) -> str | None:
    """unreachable, prompt_lost, rejected (validation), http (any other error answer), protocol; or the kind a
    JobFailed names: execution_error (a node raised), interrupted, stuck (an interrupt that did not work)."""
    kinds = ((ComfyUIUnavailable, "unreachable"), (PromptLost, "prompt_lost"), (PromptRejected, "rejected"),
             (ComfyUIProtocolError, "protocol"), (ComfyUIError, "http"))
    for kind_of, kind in kinds:
        if isinstance(exc, kind_of):
            return kind
    return getattr(exc, "comfyui_error", None)


class BusyClock:
    """Seconds during which at least one prompt of this worker ran on its GPU (the one running now included)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.since = 0.0
        self.total = 0.0

    def start(self) -> None:
        with self.lock:
            if self.running == 0:
                self.since = time.monotonic()
            self.running += 1

    def stop(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0:
                self.total += time.monotonic() - self.since

    def seconds(self) -> float:
        with self.lock:
            return self.total + (time.monotonic() - self.since if self.running else 0.0)


class BusyCollector:
    """t2i_gpu_busy_seconds_total, read at each scrape: its rate is the GPU's busy ratio."""

    def __init__(self, worker: str, clock: BusyClock):
        self.worker = worker
        self.clock = clock

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("t2i_gpu_busy_seconds", "Seconds this worker's GPU ran a prompt (its rate is "
                                     "the busy ratio)", labels=["worker"])
        family.add_metric([self.worker], self.clock.seconds())
        yield family


class WorkerMetrics:
    """The metrics of one GPU worker (labelled with its name); the runner and the task report to it."""

    def __init__(self, worker: str):
        self.worker = worker
        self.busy = BusyClock()

    def started(self, template: str, submitted_at: float) -> None:
        """The prompt started on the GPU."""
        QUEUED.labels(self.worker, template).observe(max(0.0, time.time() - submitted_at))
        self.busy.start()

    def ended(self, template: str, seconds: float) -> None:
        """A prompt that `started` left the GPU after `seconds` (finished, failed, or given up)."""
        ON_GPU.labels(self.worker, template).observe(seconds)
        self.busy.stop()

    def completed(self, seconds: float) -> None:
        COMPLETION.labels(self.worker).observe(seconds)

    def comfyui_error(self, exc: BaseException) -> None:
        """Counts `exc` if a ComfyUI error is behind it."""
        kind = comfyui_error_kind(exc)
        if kind is not None:
            COMFYUI_ERRORS.labels(self.worker, kind).inc()

    def reconnected(self) -> None:
        RECONNECTS.labels(self.worker).inc()


class MetricsServer(bootsteps.StartStopStep):
    """Worker bootstep: serves this process's metrics on METRICS_PORT (none when it is unset)."""

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.server: Any = None
        self.busy: BusyCollector | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        settings = app.settings
        self.busy = BusyCollector(app.metrics.worker, app.metrics.busy)
        REGISTRY.register(self.busy)
        if settings.metrics_port is None:
            return
        self.server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("%s: metrics on http://%s:%d/metrics", app.metrics.worker, settings.metrics_host,
                 settings.metrics_port)

    def stop(self, worker: Any) -> None:
        if self.busy is not None:
            REGISTRY.unregister(self.busy)
            self.busy = None
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
