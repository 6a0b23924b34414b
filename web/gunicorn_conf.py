"""gunicorn's settings for the web tier (`gunicorn --config python:web.gunicorn_conf "web:create_app()"`), from
the same Settings as everything else."""
import os
import shutil
from pathlib import Path
from typing import Any

from app.settings import Settings

_settings = Settings.from_env()
bind = f"{_settings.web_host}:{_settings.web_port}"
workers = _settings.web_workers
# gthread: a long-lived event stream (/api/jobs/<id>/events) holds a thread, and a sync worker would be killed
# after `timeout` s of one request. Each process serves at most EVENT_STREAMS streams (web/events.py), so its
# WEB_THREADS other threads are always there for status polls and everything else.
worker_class = "gthread"
threads = _settings.web_threads + _settings.event_streams
accesslog = "-"

# prometheus_client's multiprocess mode: each worker process writes its samples under METRICS_DIR, and /metrics
# (web/metrics.py) sums them all. prometheus_client reads the variable when it is first imported (in the workers).
_metrics_dir = Path(_settings.metrics_dir).resolve()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


def on_starting(server: Any) -> None:
    """A new gunicorn starts from empty counters (files of processes of an earlier run would add up)."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
