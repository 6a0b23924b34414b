"""When a worker asks the dispatcher for a job (workers/slots.py): one slot, a second near a job's end, none while
its ComfyUI is down."""
from __future__ import annotations

from workers.slots import Slots


class Dispatcher:
    """Records what the worker asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def pull(self, worker: str, slots: int, ended: str = "") -> None:
        self.calls.append(("pull", slots, ended))

    def release(self, worker: str, job_id: str) -> None:
        self.calls.append(("release", job_id))

    def reclaim(self, worker: str) -> list[str]:
        self.calls.append(("reclaim",))
        return []

    def stray(self, worker: str, held: set[str]) -> list[str]:
        self.calls.append(("stray", frozenset(held)))
        return []


def started(lookahead: float = 2.0) -> tuple[Slots, Dispatcher]:
    dispatcher = Dispatcher()
    slots = Slots(dispatcher, lookahead)  # type: ignore[arg-type]
    slots.start("gpu0@h")
    return slots, dispatcher


def test_nothing_is_asked_before_the_consumer_starts():
    dispatcher = Dispatcher()
    slots = Slots(dispatcher, 2.0)  # type: ignore[arg-type]
    slots.near_end("a")
    slots.ended("a")
    assert dispatcher.calls == []


def test_one_slot_then_a_second_near_a_jobs_end_closed_when_it_ends():
    slots, dispatcher = started()
    assert dispatcher.calls == [("stray", frozenset()), ("pull", 1, "")]  # leftovers of an earlier run go back
    slots.near_end("a")
    slots.near_end("a")  # once per job
    slots.ended("a")
    assert dispatcher.calls[2:] == [("pull", 2, ""), ("pull", 1, "a")]


def test_without_pipelining_a_job_near_its_end_opens_nothing():
    slots, dispatcher = started(lookahead=0)
    slots.near_end("a")
    slots.ended("a")
    assert dispatcher.calls[2:] == [("pull", 1, "a")]


def test_while_comfyui_is_down_nothing_is_asked_and_the_queue_is_given_back():
    slots, dispatcher = started()
    slots.pause()
    slots.ended("a")  # a job that ended meanwhile frees its slot without asking for another
    slots.resume()
    assert dispatcher.calls[2:] == [("reclaim",), ("release", "a"), ("pull", 1, "")]
