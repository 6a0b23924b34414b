"""The progress reporter: what it writes, and when (throttling holds back steps and node changes, never the last
step, and never drops what it held back)."""
from __future__ import annotations

from app.workflow import node_titles
from testkit.jobs import template_graph
from workers.comfyui.events import Cached, NodeExecuted, NodeStarted, Progress, Started
from workers.progress import ProgressReporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reporter(steps: int = 10):
    graph = template_graph({"prompt": "p", "steps": steps, "seed": 1}, "job")
    writes: list[dict] = []
    clock = Clock()
    progress = ProgressReporter(lambda meta: writes.append(meta) or True, graph, node_titles(graph), "gpu0@h",
                                "http://c", 0.1, clock)
    return progress, writes, clock


def test_steps_and_node_changes_are_throttled_but_the_last_step_is_not():
    progress, writes, clock = reporter(steps=10)
    progress.on_event(Started("job"))
    progress.on_event(NodeStarted("job", "3"))
    for step in range(1, 11):
        clock.now += 0.01
        progress.on_event(Progress("job", "3", step, 10))
    values = [w["progress"]["value"] for w in writes if w["node"] and w["node"]["id"] == "3"]
    assert values[-1] == 10
    assert len(values) < 6  # ten steps in 0.1 s: most are held back
    count = len(writes)
    progress.on_event(NodeStarted("job", "8"))
    assert len(writes) == count  # within the interval of the last step's write
    progress.flush()
    assert writes[-1]["node"] == {"id": "8", "class": "VAEDecode", "title": "Decode image"}
    clock.now += 0.2
    progress.on_event(NodeStarted("job", "9"))
    assert writes[-1]["node"]["id"] == "9"


def test_held_back_update_is_written_by_flush():
    progress, writes, clock = reporter()
    progress.on_event(NodeStarted("job", "3"))
    progress.on_event(Progress("job", "3", 1, 10))
    count = len(writes)
    progress.on_event(Progress("job", "3", 2, 10))
    assert len(writes) == count
    progress.flush()
    assert writes[-1]["progress"]["value"] == 2
    progress.flush()
    assert len(writes) == count + 1


def test_overall_percent_counts_cached_nodes_and_sampler_steps():
    progress, writes, clock = reporter(steps=10)
    progress.on_event(Cached("job", ("4", "5", "6", "7")))  # 4 of 7 nodes; the sampler weighs 10
    progress.on_event(NodeStarted("job", "3"))
    assert writes[-1]["progress"]["overall_percent"] == round(100 * 4 / 16, 1)
    assert writes[-1]["cached_nodes"] == 4
    clock.now += 1
    progress.on_event(Progress("job", "3", 5, 10))
    assert writes[-1]["progress"]["overall_percent"] == round(100 * 9 / 16, 1)
    progress.on_event(Progress("job", "3", 10, 10))
    progress.on_event(NodeStarted("job", "8"))
    progress.on_event(NodeStarted("job", "9"))
    progress.on_event(NodeExecuted("job", "9", ()))
    progress.flush()
    assert writes[-1]["progress"]["overall_percent"] == 100.0


def test_eta_comes_from_the_measured_step_rate():
    progress, writes, clock = reporter(steps=20)
    progress.on_event(NodeStarted("job", "3"))
    assert writes[-1]["eta_seconds"] is None
    for step in range(1, 6):
        clock.now += 0.5
        progress.on_event(Progress("job", "3", step, 20))
    progress.flush()
    assert writes[-1]["eta_seconds"] == 15 * 0.5


def test_eta_is_unknown_when_the_sampler_starts_and_zero_after_its_last_step():
    progress, writes, clock = reporter(steps=20)
    progress.on_event(NodeStarted("job", "3"))
    assert progress.eta() is None
    progress.on_event(Progress("job", "3", 1, 20))
    assert progress.eta() is None
    clock.now += 0.5
    progress.on_event(Progress("job", "3", 2, 20))
    assert progress.eta() == 18 * 0.5
    clock.now += 0.5
    progress.on_event(Progress("job", "3", 20, 20))
    assert progress.eta() == 0.0


def test_phase_is_written_at_once():
    progress, writes, clock = reporter()
    progress.phase("saving", "Saving 1 image(s)")
    assert (writes[-1]["phase"], writes[-1]["message"]) == ("saving", "Saving 1 image(s)")
    assert writes[-1]["worker"] == "gpu0@h" and writes[-1]["comfyui_url"] == "http://c"
