"""Every metric the system exports is in the README's metrics table and plotted by the shipped Grafana dashboard,
and both name only metrics that exist."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import fakeredis
from prometheus_client import REGISTRY

from app.fleet_metrics import FleetCollector
from web.metrics import REQUESTS
from workers.metrics import BusyClock, BusyCollector

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "text2img-queue.json"
SUFFIXES = ("_bucket", "_count", "_sum")


def exposed(family) -> str:
    """The name a query uses: a counter's samples end in _total; a histogram's are named by the family."""
    return family.name + "_total" if family.type == "counter" else family.name


def exported() -> set[str]:
    queue = SimpleNamespace(redis=fakeredis.FakeRedis(), templates=SimpleNamespace(names=lambda: ["txt2img"]),
                            fleet=SimpleNamespace(ready_count=lambda: 0))
    assert REQUESTS in REGISTRY._collector_to_names  # the web tier's and the workers' metrics: registered on import
    collectors = [REGISTRY, FleetCollector(queue), BusyCollector("gpu0@test", BusyClock())]
    return {exposed(family) for collector in collectors for family in collector.collect()
            if family.name.startswith("t2i_")}


def test_the_readme_lists_exactly_the_exported_metrics():
    section = ROOT.joinpath("README.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(t2i_[a-z_]+)` \|", section, re.M))
    assert listed == exported()


def test_the_dashboard_plots_every_metric_and_only_exported_ones():
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = set()
    for expression in expressions:
        for name in re.findall(r"\bt2i_[a-z_]+", expression):
            used.add(next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name))
    assert used == exported()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
