"""Fleet-wide event counts, kept in Redis and each counted in the same step as the event it counts (so no
process's death loses or repeats one). The web tier's /metrics reads them (app/fleet_metrics.py).

- t2i:metrics:ended   hash `<public end state>|<template>` -> jobs, counted by the terminal write (app/results.py)
- t2i:metrics:events  hash event -> count: lease recoveries (workers/reaper.py), webhook deliveries, failed
                      attempts and dead letters (app/webhooks.py)"""
from __future__ import annotations

from typing import Any

ENDED = "t2i:metrics:ended"
EVENTS = "t2i:metrics:events"

LEASE_RECOVERED = "lease_recovered"
WEBHOOK_DELIVERED = "webhook_delivered"
WEBHOOK_RETRY = "webhook_retry"
WEBHOOK_DEAD = "webhook_dead"


def count(pipe: Any, event: str) -> None:
    """Counts `event` within `pipe` (a transaction), so it is counted exactly when the rest of it is applied."""
    pipe.hincrby(EVENTS, event, 1)
