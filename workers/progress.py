"""The one place that writes a job's progress: phase, steps, overall percent, node, ETA; throttled.

Writes go through `write` (the task's update_state with the custom PROGRESS state), which answers whether the
job goes on. At most one write per
`interval`, except that a phase change and a sampler's last step are written at once, and a held-back update
(a step or a node change) is written by `flush()`, called on every idle tick. Node changes are not written at
once: ComfyUI runs several small nodes in a few milliseconds, and a write for each would delay the worker's
reading of the socket, hence the end of the job."""
from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any, Callable

from workers.comfyui.events import Cached, Event, NodeExecuted, NodeStarted, Progress, Started

SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")


class ProgressReporter:
    def __init__(self, write: Callable[[dict[str, Any]], bool], graph: dict[str, Any], titles: dict[str, str],
                 worker: str, comfyui_url: str, interval: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 write_later: Callable[[dict[str, Any]], Callable[[], bool]] | None = None):
        """write_later: `write`, whose answer is read when the function it returns is called (its round trip
        overlaps what the caller does meanwhile); without it, `write` is used."""
        self.write = write
        self.write_later = write_later or (lambda meta: (lambda answer=write(meta): answer))
        self.graph = graph
        self.titles = titles
        self.clock = clock
        self.interval = interval
        self.weights = {node_id: self._weight(node) for node_id, node in graph.items()}
        self.state: dict[str, Any] = {"phase": "starting", "message": "Starting", "worker": worker,
                                      "comfyui_url": comfyui_url, "started_at": time.time(), "cached_nodes": 0}
        self.done: set[str] = set()
        self.node: str | None = None
        self.value, self.max = 0, 0
        self.step_intervals: deque[float] = deque(maxlen=20)
        self.last_step_at: float | None = None
        self.last_write = float("-inf")
        self.dirty = False

    @staticmethod
    def _weight(node: dict[str, Any]) -> int:
        if node.get("class_type") in SAMPLERS:
            steps = node.get("inputs", {}).get("steps")
            return steps if isinstance(steps, int) and steps > 0 else 1
        return 1

    def _steps_of(self, node_id: str) -> int:
        return self.weights.get(node_id, 1) if self.graph.get(node_id, {}).get("class_type") in SAMPLERS else 0

    def phase(self, phase: str, message: str) -> bool:
        """Written at once; False if the job has ended meanwhile (a cancel) or is no longer this execution's."""
        self.state.update(phase=phase, message=message)
        return self._write(force=True)

    def phase_later(self, phase: str, message: str) -> Callable[[], bool]:
        """phase(), sent at once; its answer is the returned function's, which the caller must call."""
        self.state.update(phase=phase, message=message)
        self.last_write, self.dirty = self.clock(), False
        return self.write_later(self.payload())

    def on_event(self, event: Event) -> None:
        if isinstance(event, Started):
            self.state.update(phase="running", message="Running")
        elif isinstance(event, Cached):
            self.done.update(event.nodes)
            self.state["cached_nodes"] = len(event.nodes)
        elif isinstance(event, NodeStarted):
            self._enter(event.node_id)
        elif isinstance(event, Progress):
            self._step(event)
            self._write(force=event.value >= event.max)
            return
        elif isinstance(event, NodeExecuted):
            self.done.add(event.node_id)
        else:
            return
        self._write(force=False)

    def flush(self) -> None:
        if self.dirty:
            self._write(force=True)

    def _enter(self, node_id: str) -> None:
        if self.node is not None:
            self.done.add(self.node)
        self.node = node_id
        self.value, self.max = 0, 0
        self.last_step_at = None
        self.state.update(phase="running", message=f"Running {self.titles.get(node_id, node_id)}")

    def _step(self, event: Progress) -> None:
        if event.node_id != self.node:
            self._enter(event.node_id)
        now = self.clock()
        if self.last_step_at is not None and event.value > self.value:
            self.step_intervals.append((now - self.last_step_at) / (event.value - self.value))
        self.last_step_at = now
        self.value, self.max = event.value, event.max

    def _overall_percent(self) -> float:
        total = sum(self.weights.values()) or 1
        finished = sum(self.weights.get(node_id, 1) for node_id in self.done)
        if self.node is not None and self.node not in self.done and self.max:
            finished += self.weights.get(self.node, 1) * self.value / self.max
        return round(min(100.0, 100.0 * finished / total), 1)

    def eta(self) -> float | None:
        """Seconds of sampling left: None until the step rate is known, 0 once every sampler has finished."""
        remaining = sum(self._steps_of(node_id) for node_id in self.graph
                        if node_id not in self.done and node_id != self.node)
        if self.node is not None and self.node not in self.done:
            remaining += max(0, self.max - self.value) if self.max else self._steps_of(self.node)
        if remaining == 0:
            return 0.0
        if not self.step_intervals:
            return None
        return round(statistics.median(self.step_intervals) * remaining, 2)

    def payload(self) -> dict[str, Any]:
        node = None
        if self.node is not None:
            node = {"id": self.node, "class": self.graph.get(self.node, {}).get("class_type"),
                    "title": self.titles.get(self.node, self.node)}
        percent = round(100.0 * self.value / self.max, 1) if self.max else 0.0
        return {**self.state, "node": node, "eta_seconds": self.eta(), "updated_at": time.time(),
                "progress": {"value": self.value, "max": self.max, "percent": percent,
                             "overall_percent": self._overall_percent()}}

    def _write(self, force: bool) -> bool:
        now = self.clock()
        if not force and now - self.last_write < self.interval:
            self.dirty = True
            return True
        going_on = self.write(self.payload())
        self.last_write = now
        self.dirty = False
        return going_on
