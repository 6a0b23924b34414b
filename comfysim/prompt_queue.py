"""ComfyUI's PromptQueue: one FIFO (by number; `front` posts get negative numbers), the running set, history."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any, Callable

MAX_HISTORY = 10000

QueueItem = list[Any]  # [number, prompt_id, prompt, extra_data, outputs_to_execute]


class PromptQueue:
    def __init__(self, on_change: Callable[[], None]):
        self.on_change = on_change
        self.pending: list[tuple[float, int, QueueItem]] = []
        self.running: dict[int, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.recorded: dict[str, dict[str, Any]] = {}  # every entry ever written, deleted or not (for tests)
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self.number = 0

    def next_number(self, front: bool) -> int:
        number = -self.number if front else self.number
        self.number += 1
        return number

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self.pending, (item[0], next(self._order), item))
        self._ready.set()
        self.on_change()

    async def get(self) -> tuple[int, QueueItem]:
        while not self.pending:
            self._ready.clear()
            await self._ready.wait()
        _, task_id, item = heapq.heappop(self.pending)
        self.running[task_id] = item
        self.on_change()
        return task_id, item

    def task_done(self, task_id: int, history_entry: dict[str, Any]) -> None:
        item = self.running.pop(task_id)
        if len(self.history) >= MAX_HISTORY:
            self.history.pop(next(iter(self.history)))
        if len(self.recorded) >= MAX_HISTORY:
            self.recorded.pop(next(iter(self.recorded)))
        self.history[item[1]] = self.recorded[item[1]] = history_entry
        self.on_change()

    def remaining(self) -> int:
        return len(self.pending) + len(self.running)

    def snapshot(self) -> dict[str, list[QueueItem]]:
        return {"queue_running": list(self.running.values()), "queue_pending": [entry[2] for entry in self.pending]}

    def running_ids(self) -> list[str]:
        return [item[1] for item in self.running.values()]

    def delete_pending(self, prompt_ids: list[str]) -> None:
        kept = [entry for entry in self.pending if entry[2][1] not in prompt_ids]
        if len(kept) != len(self.pending):
            self.pending = kept
            heapq.heapify(self.pending)
            self.on_change()

    def clear_pending(self) -> None:
        self.pending = []
        self.on_change()

    def history_page(self, max_items: int | None, offset: int = -1) -> dict[str, Any]:
        """The history, oldest first; by default the last max_items entries."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        page: dict[str, Any] = {}
        for index, (prompt_id, entry) in enumerate(self.history.items()):
            if index >= offset:
                page[prompt_id] = entry
                if max_items is not None and len(page) >= max_items:
                    break
        return page
