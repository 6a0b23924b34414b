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
# Many pollers (bench/pollers.py: 1,000 keep-alive connections). Between requests gthread keeps a connection in
# its poller, not in a thread: connections need no threads. What bounds them:
# - worker_connections: a process stops accepting at this many, and once this many less `threads` wait between
#   requests it closes each connection after its answer. Processes do not share connections evenly (whichever is
#   free accepts) and WEB_WORKERS may be 1: each process can hold 1,000 pollers beside its event streams, which
#   gunicorn's default of 1,000 cannot.
# - keepalive: seconds an idle connection is kept: longer than the web page's slowest regular poll (every 5 s in a
#   hidden tab), which with gunicorn's default of 2 s would connect anew each time.
# - backlog (gunicorn's default; the kernel caps it at net.core.somaxconn): connections wait there until a process
#   accepts them, as 1,000 pollers connecting at once do.
worker_connections = 2000
keepalive = 6
backlog = 2048

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
