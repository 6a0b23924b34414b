"""Reading Prometheus metrics as a scraper would: the text format, parsed by prometheus_client's own parser."""
from __future__ import annotations

from typing import Any, Mapping

import requests
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from app.fleet_metrics import exposition

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a /metrics body."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["Content-Type"] in (CONTENT_TYPE_LATEST, CONTENT_TYPE_PLAIN_0_0_4), response.headers
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= sample_labels)


def fleet(core: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The fleet's metrics as the web tier's /metrics serves them, read with `core`'s Redis."""
    return parse(exposition(core).decode())
