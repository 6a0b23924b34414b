"""GET /metrics: the web tier's requests (by route and status) and the fleet's metrics from Redis
(app/fleet_metrics.py), in Prometheus's text format.

Under gunicorn every process counts its own requests into files under METRICS_DIR (prometheus_client's
multiprocess mode, set up by web/gunicorn_conf.py), and whichever process answers a scrape adds them all up."""
from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector

from app.fleet_metrics import exposition
from web.context import celery_app

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("t2i_http_requests", "Requests the web tier answered, by route, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("t2i_http_request_seconds", "Time to answer (to the first byte of a streamed answer), by route",
                    ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


@bp.before_app_request
def start_timer() -> None:
    g.metrics_started = time.perf_counter()


@bp.after_app_request
def count_request(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        LATENCY.labels(route).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Any:
    body = generate_latest(_process_registry()) + exposition(celery_app())
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def _process_registry() -> CollectorRegistry:
    """Every gunicorn process's samples in multiprocess mode; else this process's own."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry
