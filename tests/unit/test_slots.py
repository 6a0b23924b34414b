"""When a worker asks the dispatcher for a job (workers/slots.py): one slot, a second near a job's end, none while
its ComfyUI is down."""
from __future__ import annotations

from workers.slots import Slots


class Dispatcher:
    """Records what the worker asks for."""

    def pull(self, worker: str, slots: int, ended: str = "") -> None:
        self.calls.append(("pull", slots, ended))

    def release(self, worker: str, job_id: str) -> None:
        self.calls.append(("release", job_id))

    def reclaim(self, worker: str) -> list[str]:
        self.calls.append(("reclaim",))
        return []

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.unheld_jobs: list[str] = []

    def unheld(self, worker: str, held: set[str]) -> list[str]:
        self.calls.append(("unheld", frozenset(held)))
        return [job for job in self.unheld_jobs if job not in held]

    def hand_back(self, job_id: str, worker: str) -> None:
        self.calls.append(("hand_back", job_id))


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
    assert dispatcher.calls == [("unheld", frozenset()), ("pull", 1, "")]  # leftovers of an earlier run go back
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


def test_a_job_goes_back_once_two_looks_in_a_row_find_it_neither_held_nor_queued():
    """A message on its way from the worker's queue to its consumer is in neither for a moment: one look that
    finds a job so only makes it a suspect."""
    dispatcher = Dispatcher()
    dispatcher.unheld_jobs = ["left-by-an-earlier-run"]
    slots = Slots(dispatcher, 2.0)  # type: ignore[arg-type]
    slots.start("gpu0@h")
    assert ("hand_back", "left-by-an-earlier-run") in dispatcher.calls  # at start nothing is on its way yet
    dispatcher.calls.clear()
    dispatcher.unheld_jobs = ["in-flight", "lost"]
    slots.reconcile()
    assert not [call for call in dispatcher.calls if call[0] == "hand_back"]
    dispatcher.unheld_jobs = ["lost"]  # the in-flight one has reached the consumer
    slots.reconcile()
    assert [call for call in dispatcher.calls if call[0] == "hand_back"] == [("hand_back", "lost")]
