"""The Celery app of one GPU worker process: the shared app, plus what belongs to this process alone."""
from __future__ import annotations

from functools import cached_property

from app.celery_app import Text2ImgCelery
from workers.cleanup import Cleaner
from workers.comfyui.spare import SpareSockets
from workers.health import ComfyUIHealth
from workers.metrics import WorkerMetrics
from workers.slots import Slots


class GPUWorkerApp(Text2ImgCelery):
    events_cls = "workers.events:KeptDispatchers"  # a job's events through a dispatcher kept per thread
    # The consumer's ComfyUI health step, once the consumer has started (workers/health.py).
    comfyui_health: ComfyUIHealth | None = None

    @cached_property
    def slots(self) -> Slots:
        """When this worker asks for jobs, with prompt pipelining (workers/slots.py)."""
        return Slots(self.dispatcher, self.settings.pipeline_lookahead)

    @cached_property
    def spare_sockets(self) -> SpareSockets:
        """Websockets opened ahead of the next job (workers/comfyui/spare.py)."""
        return SpareSockets()

    @cached_property
    def cleaner(self) -> Cleaner:
        """Cleans ComfyUI up after ended jobs (workers/cleanup.py)."""
        return Cleaner()

    @cached_property
    def metrics(self) -> WorkerMetrics:
        """This worker's Prometheus metrics (workers/metrics.py)."""
        return WorkerMetrics(self.settings.worker_name)
