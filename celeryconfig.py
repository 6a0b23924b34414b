"""All configuration: Celery's settings and text2img-queue's own (the `text2img_*` names), from the environment.

Every variable is listed with its default in the README. Read at import time; tests set the environment of
the processes they start.
"""
from __future__ import annotations

import os


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


REDIS_URL = _env("REDIS_URL", "redis://127.0.0.1:6379/0")

broker_url = REDIS_URL
result_backend = REDIS_URL
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
task_default_queue = _env("QUEUE_NAME", "text2img")
imports = ("tasks.generate",)

# A job is acknowledged only when it has ended, and a worker that dies mid-job gives it back.
task_acks_late = True
task_reject_on_worker_lost = True
# One job at a time per GPU worker, and no job waits in a busy worker's buffer while another GPU is idle;
# the one exception is prompt pipelining (workers/pipeline.py), which raises the prefetch to 2 for the last
# PIPELINE_LOOKAHEAD seconds of a job. Celery's own prefetch changes after a reconnect would undo that.
worker_prefetch_multiplier = 1
worker_enable_prefetch_count_reduction = False
# STARTED is written by the execution that took the job's lease (tasks/generate.py), not by Celery before the
# task runs: a copy of a job that another worker runs must not overwrite that job's progress.
task_track_started = False
result_extended = True
result_expires = int(_env("RESULT_EXPIRES", "86400"))
# Events for Flower.
worker_send_task_events = True
task_send_sent_event = True
broker_connection_retry_on_startup = True

# A job whose worker died is found by its lease (app/leases.py): the execution running a job refreshes its lease
# every LEASE_TTL/5 seconds; every REAPER_INTERVAL seconds one worker (under a Redis lock) hands the jobs whose lease
# expired back to the front of the queue (workers/reaper.py). So a lost worker's job resumes within about
# LEASE_TTL + REAPER_INTERVAL seconds. The broker's visibility timeout (kombu hands back any message unacknowledged
# for that long) is only the last resort; it must outlast the longest job, so it is the job time limit, the
# ComfyUI queue wait limit and a margin.
JOB_TIME_LIMIT = float(_env("JOB_TIME_LIMIT", "600"))
QUEUE_WAIT_LIMIT = float(_env("QUEUE_WAIT_LIMIT", "600"))
broker_transport_options = {
    "visibility_timeout": int(_env("VISIBILITY_TIMEOUT", str(int(JOB_TIME_LIMIT + QUEUE_WAIT_LIMIT) + 300))),
    # Look for abandoned jobs every few seconds (the default sweep is far slower).
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}
redis_socket_timeout = 10.0
redis_socket_connect_timeout = 5.0
redis_retry_on_timeout = True

# text2img-queue settings.
text2img_comfyui_url = _env("COMFYUI_URL", "http://127.0.0.1:8188")  # a worker's own ComfyUI
text2img_gpu = int(_env("GPU_INDEX", "0"))
text2img_job_time_limit = JOB_TIME_LIMIT  # seconds on the GPU, from the prompt's execution_start
text2img_queue_wait_limit = QUEUE_WAIT_LIMIT  # seconds a submitted prompt may wait in ComfyUI's queue
text2img_interrupt_grace = float(_env("INTERRUPT_GRACE", "30"))  # seconds ComfyUI has to stop a prompt we stop
text2img_lease_ttl = float(_env("LEASE_TTL", "10"))
text2img_reaper_interval = float(_env("REAPER_INTERVAL", "2"))
text2img_output_store = _env("OUTPUT_STORE", "redis")  # "redis" or "directory"
text2img_output_dir = _env("OUTPUT_DIR", "var/outputs")
text2img_preview_ttl = int(_env("PREVIEW_TTL", "60"))
text2img_progress_interval = float(_env("PROGRESS_INTERVAL", "0.1"))
# Take the next job this many seconds before the current one ends, so its prompt waits in ComfyUI's queue; 0: off.
text2img_pipeline_lookahead = float(_env("PIPELINE_LOOKAHEAD", "2"))
# Web processes keep polled statuses of started jobs in memory, dropped by Redis's key-change notifications.
text2img_status_cache = _env("STATUS_CACHE", "1") == "1"
text2img_comfyui_retries = int(_env("COMFYUI_RETRIES", "3"))
text2img_worker_heartbeat = float(_env("WORKER_HEARTBEAT", "5"))
text2img_max_prompt_length = int(_env("MAX_PROMPT_LENGTH", "2000"))
text2img_max_pixels = int(_env("MAX_PIXELS", str(2048 * 2048)))
text2img_max_steps = int(_env("MAX_STEPS", "150"))
text2img_max_batch = int(_env("MAX_BATCH", "8"))
text2img_checkpoint = _env("CHECKPOINT", "v1-5-pruned-emaonly.safetensors")
