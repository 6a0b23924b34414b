"""The fleet's metrics, read from Redis at each scrape of the web tier's /metrics: jobs by end state and template,
queue depth by priority, jobs on GPUs, GPU workers online, lease recoveries and webhook deliveries.

They are the same whichever web process or host answers: query them with max(), not sum(), across web instances."""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app.counters import ENDED, EVENTS, LEASE_RECOVERED, WEBHOOK_DEAD, WEBHOOK_DELIVERED, WEBHOOK_RETRY
from app.dispatch import QUEUE_INDEX
from app.leases import RUNNING
from app.webhooks import FAILED

PRIORITIES = range(10)
OTHER = "other"  # a template name that is not (or no longer) in TEMPLATES_DIR: labels stay few


def _band_range(priority: int) -> tuple[str, str]:
    """The lexical range of the ready index that holds the jobs of `priority` (app/dispatch.py: band 9 - priority)."""
    band = str(9 - priority)
    return f"[{band}", f"({chr(ord(band) + 1)}"


class FleetCollector:
    """queue: the web tier's Text2ImgCelery (its Redis, templates and fleet)."""

    def __init__(self, queue: Any):
        self.queue = queue

    def collect(self) -> Iterator[Any]:
        pipe = self.queue.redis.pipeline(transaction=False)
        pipe.hgetall(ENDED)
        pipe.hgetall(EVENTS)
        pipe.hlen(RUNNING)
        pipe.llen(FAILED)
        for priority in PRIORITIES:
            pipe.zlexcount(QUEUE_INDEX, *_band_range(priority))
        ended, events, running, dead_letters, *depths = pipe.execute()
        events = {name.decode(): int(value) for name, value in events.items()}
        yield self._ended(ended)
        yield self._gauge("t2i_queue_depth", "Jobs waiting for a GPU, by priority (0-9, 9 first)", ["priority"],
                          [([str(priority)], depth) for priority, depth in zip(PRIORITIES, depths)])
        yield self._gauge("t2i_jobs_running", "Jobs an execution holds on a GPU now", [], [([], running)])
        yield self._gauge("t2i_gpu_workers_ready", "GPU workers taking jobs (heartbeat fresh, ComfyUI answering)",
                          [], [([], self.queue.fleet.ready_count())])
        yield self._counter("t2i_lease_recoveries", "Jobs handed back after their worker stopped renewing the lease",
                            events.get(LEASE_RECOVERED, 0))
        yield self._counter("t2i_webhook_deliveries", "Webhook deliveries a receiver accepted (2xx)",
                            events.get(WEBHOOK_DELIVERED, 0))
        failures = CounterMetricFamily("t2i_webhook_failures", "Failed webhook attempts: retried later, or final "
                                       "(the delivery became a dead letter)", labels=["final"])
        failures.add_metric(["false"], events.get(WEBHOOK_RETRY, 0))
        failures.add_metric(["true"], events.get(WEBHOOK_DEAD, 0))
        yield failures
        yield self._gauge("t2i_webhook_dead_letters", "Dead-letter deliveries waiting to be replayed", [],
                          [([], dead_letters)])

    def _ended(self, ended: dict[bytes, bytes]) -> CounterMetricFamily:
        known = set(self.queue.templates.names()) | {"workflow", "unknown"}
        counts: dict[tuple[str, str], int] = {}
        for field, value in ended.items():
            state, _, template = field.decode().partition("|")
            key = (state, template if template in known else OTHER)
            counts[key] = counts.get(key, 0) + int(value)
        family = CounterMetricFamily("t2i_jobs_ended", "Jobs that reached an end state, by state and template",
                                     labels=["state", "template"])
        for (state, template), value in sorted(counts.items()):
            family.add_metric([state, template], value)
        return family

    @staticmethod
    def _gauge(name: str, documentation: str, labels: list[str],
               samples: list[tuple[list[str], float]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=labels)
        for values, value in samples:
            family.add_metric(values, value)
        return family

    @staticmethod
    def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, value=value)


def exposition(queue: Any) -> bytes:
    """The fleet's metrics in Prometheus's text format, read now with `queue`'s Redis."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(queue))
    return generate_latest(registry)
