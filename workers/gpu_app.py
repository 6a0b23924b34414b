"""The Celery app of one GPU worker process: the shared app, plus what belongs to this process alone."""
from __future__ import annotations

from functools import cached_property

from app.celery_app import Text2ImgCelery
from workers.health import ComfyUIHealth
from workers.pipeline import Lookahead


class GPUWorkerApp(Text2ImgCelery):
    # The consumer's ComfyUI health step, once the consumer has started (workers/health.py).
    comfyui_health: ComfyUIHealth | None = None

    @cached_property
    def lookahead(self) -> Lookahead:
        """The process's prompt pipelining gate (workers/pipeline.py); off when PIPELINE_LOOKAHEAD is 0."""
        return Lookahead(self.settings.pipeline_lookahead)
