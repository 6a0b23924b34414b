"""Per-prompt node progress, sent as `progress_state` frames the way ComfyUI's ProgressRegistry does."""
from __future__ import annotations

from typing import Any, Callable


class ProgressState:
    """`publish` must serialise (or copy) what it is given before it returns: the entries change as the prompt
    runs. Hub.send serialises at once, so no frame needs a copy of its own."""

    def __init__(self, prompt_id: str, publish: Callable[[dict[str, Any]], None]):
        self.prompt_id = prompt_id
        self.publish = publish
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str, value: float, maximum: float) -> dict[str, Any]:
        return self.nodes.setdefault(node_id, {
            "value": value, "max": maximum, "state": "pending", "node_id": node_id, "prompt_id": self.prompt_id,
            "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id,
        })

    def _send(self) -> None:
        self.publish({"prompt_id": self.prompt_id, "nodes": self.nodes})

    def start(self, node_id: str) -> None:
        entry = self._entry(node_id, 0.0, 1.0)
        entry.update(value=0.0, max=1.0, state="running")
        self._send()

    def update(self, node_id: str, value: int, maximum: int) -> None:
        entry = self._entry(node_id, value, maximum)
        entry.update(value=value, max=maximum, state="running")
        self._send()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id, 1, 1)
        entry.update(value=entry["max"], state="finished")
        self._send()
