"""The pipelining gate's arithmetic on a consumer's real kombu QoS: one job at a time, one more near a job's end."""
from __future__ import annotations

from types import SimpleNamespace

from kombu.common import QoS

from workers.pipeline import Lookahead


class Hub:
    """Runs call_soon callbacks when told to, as the worker's event loop would on its next turn."""

    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, callback) -> None:
        self.ready.append(callback)

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


def consumer(threads: int = 2) -> SimpleNamespace:
    """A consumer fresh from Celery's Tasks step: prefetch = pool threads x multiplier 1."""
    applied: list[int] = []
    qos = QoS(lambda prefetch_count: applied.append(prefetch_count), threads)
    qos.update()
    return SimpleNamespace(qos=qos, hub=Hub(), pool=SimpleNamespace(num_processes=threads), applied=applied)


def test_one_job_at_a_time_until_a_job_is_near_its_end():
    gate, worker = Lookahead(2.0), consumer()
    gate.attach(worker)
    assert worker.applied[-1] == 1
    gate.near_end("a")
    assert worker.applied[-1] == 1  # applied on the loop's next turn, not from the task's thread
    worker.hub.turn()
    assert worker.applied[-1] == 2
    gate.near_end("a")
    gate.near_end("b")  # the pipelined job nearing its end while the first still runs: still one extra
    worker.hub.turn()
    assert worker.qos.value == 2
    gate.ended("a")
    worker.hub.turn()
    assert worker.qos.value == 2  # "b" keeps its slot open
    gate.ended("b")
    worker.hub.turn()
    assert worker.applied[-1] == 1


def slot_opened_by(job_id: str) -> tuple[Lookahead, SimpleNamespace]:
    """A gate attached to a consumer, with the extra slot opened by `job_id` and applied."""
    gate, worker = Lookahead(2.0), consumer()
    gate.attach(worker)
    gate.near_end(job_id)
    worker.hub.turn()
    return gate, worker


def test_a_restarted_consumer_keeps_the_slot_a_running_job_opened():
    gate, _ = slot_opened_by("a")
    reconnected = consumer()
    gate.detach()
    gate.attach(reconnected)
    assert reconnected.applied[-1] == 2
    gate.ended("a")
    reconnected.hub.turn()
    assert reconnected.applied[-1] == 1


def test_jobs_ending_while_detached_are_forgotten_on_attach():
    gate, _ = slot_opened_by("a")
    gate.detach()
    gate.ended("a")
    fresh = consumer()
    gate.attach(fresh)
    assert fresh.applied[-1] == 1


def test_disabled_gate_never_opens():
    gate, worker = Lookahead(0), consumer(threads=1)
    gate.attach(worker)
    gate.near_end("a")
    worker.hub.turn()
    assert worker.applied == [1]
