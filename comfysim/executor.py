"""The simulated GPU: takes one prompt at a time from the queue and runs it with ComfyUI's messages."""
from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from comfysim import render
from comfysim.catalogue import NODES
from comfysim.graph import execution_order, is_link, signatures
from comfysim.hub import Hub
from comfysim.nodes import NODE_FUNCTIONS
from comfysim.progress import ProgressState
from comfysim.prompt_queue import PromptQueue, QueueItem
from comfysim.settings import Settings
from comfysim.storage import Storage

log = logging.getLogger("comfysim.executor")


class Interrupted(Exception):
    pass


class SimulatedFault(Exception):
    """The configured failure (settings.fail_node); reports the exception type it was told to."""

    def __init__(self, spec: str):
        type_name, _, message = spec.partition(":")
        super().__init__(message.strip() or "simulated failure")
        self.type_name = type_name.strip() or "RuntimeError"


@dataclass
class NodeFailure(Exception):
    node_id: str
    error: BaseException
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CachedNode:
    outputs: tuple[Any, ...]
    ui: dict[str, Any]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _format_input(value: Any) -> Any:
    return value if value is None or isinstance(value, (int, float, bool, str)) else str(value)


class Executor:
    def __init__(self, settings: Settings, hub: Hub, queue: PromptQueue, storage: Storage,
                 log: Callable[[dict[str, Any]], None]):
        self.settings = settings
        self.log = log
        self.hub = hub
        self.queue = queue
        self.storage = storage
        self.cache: dict[str, CachedNode] = {}
        self.loaded_checkpoints: set[str] = set()
        self.interrupt_requested = False
        self.client_id: str | None = None  # of the prompt running (or last run), as ComfyUI's server.client_id
        self.last_node_id: str | None = None

    async def run_forever(self) -> None:
        while True:
            task_id, item = await self.queue.get()
            prompt_id = item[1]
            try:
                entry = await PromptRun(self, item).execute()
            except Exception:  # the simulator itself failed: never wedge the queue
                log.exception("prompt %s crashed the executor", prompt_id)
                entry = {"prompt": item, "outputs": {}, "status": {"status_str": "error", "completed": False,
                                                                   "messages": []}, "meta": {}}
            if self.settings.history_delay > 0:
                await asyncio.sleep(self.settings.history_delay)
            self.queue.task_done(task_id, entry)
            self.last_node_id = None
            if self.client_id is not None:
                self.hub.send("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)
            self.event("done", prompt_id)

    def interrupt(self) -> None:
        self.interrupt_requested = True

    def event(self, name: str, prompt_id: str, **data: Any) -> None:
        """Timestamps for benchmarks (settings.log_events): prompt start and end, progress frames."""
        if self.settings.log_events:
            self.log({"event": name, "prompt_id": prompt_id, **data})

    def check_interrupt(self) -> None:
        if self.interrupt_requested:
            self.interrupt_requested = False
            if self.settings.interrupt_as_error:
                raise RuntimeError("interrupted inside the node, which raised its own error")
            raise Interrupted()


class PromptRun:
    """One execution of one prompt; also the context node functions see."""

    def __init__(self, executor: Executor, item: QueueItem):
        self.executor = executor
        self.item = item
        self.prompt_id: str = item[1]
        self.prompt: dict[str, Any] = item[2]
        self.extra_pnginfo: dict[str, Any] = item[3].get("extra_pnginfo", {})
        self.client_id: str | None = item[3].get("client_id")
        self.storage = executor.storage
        self.settings = executor.settings
        self.step_seconds = executor.settings.step_seconds
        self.previews = executor.settings.previews
        self.noise = executor.settings.noise
        self.hub = executor.hub
        self.messages: list[list[Any]] = []
        self.executed: list[str] = []
        self.results: dict[str, CachedNode] = {}
        self.ui_outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.current_node = ""
        self.progress_state = ProgressState(self.prompt_id, lambda data: self.hub.send("progress_state", data, self.client_id))

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.hub.send(event, data, self.client_id)

    def send_to_client(self, event: str, data: dict[str, Any]) -> None:
        if self.client_id is not None:
            self.hub.send(event, data, self.client_id)

    async def execute(self) -> dict[str, Any]:
        self.executor.client_id = self.client_id
        self.executor.interrupt_requested = False
        self.executor.event("start", self.prompt_id)
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        keys = signatures(self.prompt)
        cache = self.executor.cache
        cached = [node_id for node_id in self.prompt if keys[node_id] in cache]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id}, broadcast=False)
        self.results = {node_id: cache[keys[node_id]] for node_id in cached}
        order = execution_order(self.prompt, self.item[4], lambda node_id: keys[node_id] in cache)
        succeeded = False
        try:
            for node_id in order:
                await self.run_node(node_id, keys[node_id])
            succeeded = True
        except Interrupted:
            self.add_message("execution_interrupted", self._failure_head(self.current_node), broadcast=True)
        except NodeFailure as failure:
            self.add_message("execution_error", self._error_payload(failure), broadcast=False)
        else:
            if self.settings.success_delay > 0:
                await asyncio.sleep(self.settings.success_delay)
            self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        wanted = set(keys.values())
        self.executor.cache = {key: value for key, value in cache.items() if key in wanted}
        return {
            "prompt": self.item,
            "outputs": self.ui_outputs if succeeded else {},
            "status": {"status_str": "success" if succeeded else "error", "completed": succeeded,
                       "messages": self.messages},
            "meta": self.meta if succeeded else {},
        }

    def _failure_head(self, node_id: str) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "node_id": node_id, "node_type": self.prompt[node_id]["class_type"],
                "executed": list(self.executed)}

    def _error_payload(self, failure: NodeFailure) -> dict[str, Any]:
        error = failure.error
        type_name = error.type_name if isinstance(error, SimulatedFault) else type(error).__name__
        return {
            **self._failure_head(failure.node_id),
            "exception_message": f"{error}\n",
            "exception_type": type_name,
            "traceback": traceback.format_tb(error.__traceback__),
            "current_inputs": {name: [_format_input(value)] for name, value in failure.inputs.items()},
            "current_outputs": list(self.prompt),
        }

    async def run_node(self, node_id: str, key: str) -> None:
        class_type = self.prompt[node_id]["class_type"]
        cached = self.executor.cache.get(key)
        if cached is not None:  # an output node whose result is cached: ComfyUI replays its UI output
            self._record(node_id, cached)
            self.progress_state.finish(node_id)
            return
        self.current_node = node_id
        self.progress_state.start(node_id)
        self.executor.last_node_id = node_id
        self.send_to_client("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})
        inputs = self._inputs(node_id)
        try:
            self.executor.check_interrupt()
            if self.settings.fail_node == class_type:
                raise SimulatedFault(self.settings.fail_exception)
            outputs, ui = await NODE_FUNCTIONS[class_type](self, **inputs)
        except Interrupted:
            raise
        except Exception as error:
            raise NodeFailure(node_id, error, inputs) from error
        result = CachedNode(outputs, ui)
        self.executor.cache[key] = result
        self.executed.append(node_id)
        self._record(node_id, result)
        self.progress_state.finish(node_id)

    def _inputs(self, node_id: str) -> dict[str, Any]:
        spec = NODES[self.prompt[node_id]["class_type"]]
        inputs = {}
        for name, value in self.prompt[node_id]["inputs"].items():
            if name in spec.required:
                inputs[name] = self.results[value[0]].outputs[value[1]] if is_link(value) else value
        return inputs

    def _record(self, node_id: str, result: CachedNode) -> None:
        self.results[node_id] = result
        if not result.ui:
            return
        self.ui_outputs[node_id] = result.ui
        self.meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
        self.send_to_client("executed", {"node": node_id, "display_node": node_id, "output": result.ui,
                                         "prompt_id": self.prompt_id})

    # The context node functions use.
    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def load_checkpoint(self, name: str) -> None:
        if name not in self.executor.loaded_checkpoints:
            await asyncio.sleep(self.settings.load_seconds)
            self.executor.loaded_checkpoints.add(name)

    async def progress(self, value: int, total: int, preview: tuple[str, Image.Image] | None = None) -> None:
        if self.settings.exit_at_step and value == self.settings.exit_at_step:
            log.warning("exit_at_step=%s reached: exiting without goodbye", value)
            os._exit(3)
        self.executor.check_interrupt()
        node_id = self.current_node
        self.progress_state.update(node_id, value, total)
        image = None
        if preview is not None:
            image_format, picture = preview
            image = (image_format, render.jpeg_bytes(picture) if image_format == "JPEG" else render.png_bytes(picture))
        with_metadata = self.hub.supports_preview_metadata(self.client_id)
        if image is not None and with_metadata:
            metadata = {"node_id": node_id, "prompt_id": self.prompt_id, "display_node_id": node_id,
                        "parent_node_id": None, "real_node_id": node_id}
            self.hub.send_preview(*image, metadata, self.client_id)
        self.hub.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id},
                      self.client_id)
        self.executor.event("progress", self.prompt_id, value=value, max=total)
        if image is not None and not with_metadata:
            self.hub.send_preview(*image, None, self.client_id)
        await asyncio.sleep(0)
