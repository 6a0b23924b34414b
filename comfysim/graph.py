"""Execution order and cache keys of an API-format graph, the way ComfyUI's ExecutionList picks nodes."""
from __future__ import annotations

import json
from typing import Any, Callable

from comfysim.catalogue import NODES


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def signatures(prompt: dict[str, Any]) -> dict[str, str]:
    """A cache key per node: its class and constant inputs, with links replaced by the linked node's key."""
    keys: dict[str, str] = {}

    def key(node_id: str) -> str:
        if node_id not in keys:
            node = prompt[node_id]
            inputs = {name: ["link", key(value[0]), value[1]] if is_link(value) else value
                      for name, value in sorted(node["inputs"].items())}
            keys[node_id] = json.dumps([node["class_type"], inputs], sort_keys=True, default=str)
        return keys[node_id]

    for node_id in prompt:
        key(node_id)
    return keys


def execution_order(prompt: dict[str, Any], outputs: list[str], is_cached: Callable[[str], bool]) -> list[str]:
    """Nodes to run, in ComfyUI's order: output nodes always, their uncached dependencies first."""
    pending: dict[str, set[str]] = {}  # node -> nodes it waits for; insertion order matters
    blocking: dict[str, set[str]] = {}
    for output in outputs:
        stack = [output]
        while stack:
            node_id = stack.pop()
            if node_id in pending:
                continue
            pending[node_id] = set()
            blocking.setdefault(node_id, set())
            for value in prompt[node_id]["inputs"].values():
                if is_link(value) and not is_cached(value[0]):
                    stack.append(value[0])
                    pending[node_id].add(value[0])
                    blocking.setdefault(value[0], set()).add(node_id)
    order = []
    while pending:
        ready = [node_id for node_id, waits in pending.items() if not waits]
        chosen = _friendly_pick(prompt, ready, blocking, pending)
        order.append(chosen)
        del pending[chosen]
        for waits in pending.values():
            waits.discard(chosen)
    return order


def _is_output(prompt: dict[str, Any], node_id: str) -> bool:
    return NODES[prompt[node_id]["class_type"]].output_node


def _friendly_pick(prompt: dict[str, Any], ready: list[str], blocking: dict[str, set[str]],
                   pending: dict[str, set[str]]) -> str:
    for node_id in ready:
        if _is_output(prompt, node_id):
            return node_id
    for node_id in ready:
        if any(_is_output(prompt, b) for b in blocking[node_id]):
            return node_id
    for node_id in ready:
        for blocked in blocking[node_id]:
            if blocked in pending and any(_is_output(prompt, b) for b in blocking[blocked]):
                return node_id
    return ready[0]
