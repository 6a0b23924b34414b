"""text2img.generate: the one public task. Its id is the job id everywhere."""
from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.signals import task_revoked

from app import registry
from app.celery_app import TASK_NAME, celery
from app.request import RequestError, parse_request
from app.status import progress_summary
from workers.comfyui import ComfyUIError, ComfyUIUnavailable, PromptLost, PromptRejected
from workers.health import comfyui_unreachable
from workers.pipeline import lookahead
from workers.runner import JobCancelled, JobFailed, JobRunner, LeaseHeld

log = logging.getLogger("tasks.generate")


@celery.task(name=TASK_NAME, bind=True)
def generate(self: Task, **fields: Any) -> dict[str, Any]:
    job_id = self.request.id
    conf = self.app.conf
    try:
        request = parse_request(fields)
    except RequestError as exc:
        registry.record_finished(job_id)
        raise JobFailed(f"invalid request: {exc}", {"errors": exc.errors})
    registry.ensure_record(job_id, request.to_dict())

    def write_progress(meta: dict[str, Any]) -> None:
        self.update_state(state="PROGRESS", meta=meta)
        self.send_event("task-progress", result=progress_summary(meta))  # Flower shows it as the task's result

    runner = JobRunner(job_id, request, conf.text2img_comfyui_url, self.request.hostname, write_progress,
                       time_limit=conf.text2img_job_time_limit, progress_interval=conf.text2img_progress_interval,
                       lookahead=lookahead)
    try:
        result = runner.run()
    except LeaseHeld:
        log.info("job %s is running on another worker; this copy stands down", job_id)
        raise Ignore()
    except JobCancelled:
        self.backend.mark_as_revoked(job_id, reason="cancelled", request=self.request)
        registry.record_finished(job_id)
        raise Ignore()
    except (ComfyUIUnavailable, PromptLost) as exc:
        if isinstance(exc, ComfyUIUnavailable):
            comfyui_unreachable(exc.url)
        registry.record_requeued(job_id)
        failure = JobFailed(f"ComfyUI unreachable: {exc}", {"comfyui_url": exc.url, "worker": self.request.hostname})
        raise self.retry(exc=failure, countdown=min(30, 2 ** self.request.retries),
                         max_retries=conf.text2img_comfyui_retries)
    except PromptRejected as exc:
        registry.record_finished(job_id)
        raise JobFailed(f"ComfyUI rejected the workflow: {exc.reason}",
                        {"comfyui_url": exc.url, "node_errors": exc.node_errors, "worker": self.request.hostname})
    except ComfyUIError as exc:
        registry.record_finished(job_id)
        raise JobFailed(str(exc), {"comfyui_url": exc.url, "worker": self.request.hostname})
    except JobFailed:
        registry.record_finished(job_id)
        raise
    registry.record_finished(job_id)
    return result


@task_revoked.connect
def _forget_revoked(request: Any = None, **_: Any) -> None:
    """A cancelled job a worker drops without running it leaves the queue index here."""
    if request is not None and getattr(request, "task", None) == TASK_NAME:
        registry.record_finished(request.id)
