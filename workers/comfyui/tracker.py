"""The messages of one client id, turned into the events of one prompt: a pure state machine, no socket."""
from __future__ import annotations

import json
import struct
from typing import Any

from workers.comfyui.events import (Cached, Event, Failed, ImageRef, Interrupted, NodeExecuted, NodeStarted, Preview,
                                    Progress, Started, Succeeded)

PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4
IMAGE_MIME = {1: "image/jpeg", 2: "image/png"}


def decode_preview(frame: bytes) -> tuple[str | None, str | None, str, bytes] | None:
    """(prompt_id, node_id, mime, image) of a binary preview frame; None for other binary events."""
    if len(frame) < 8:
        return None
    event, word = struct.unpack(">II", frame[:8])
    if event == PREVIEW_IMAGE:
        return None, None, IMAGE_MIME.get(word, "application/octet-stream"), frame[8:]
    if event == PREVIEW_IMAGE_WITH_METADATA:
        try:
            meta = json.loads(frame[8:8 + word])
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        node = meta.get("node_id")
        return meta.get("prompt_id"), None if node is None else str(node), str(meta.get("image_type", "")), frame[8 + word:]
    return None


class PromptTracker:
    """Turns the messages of one client id into events of one prompt.

    missed: messages of the prompt may have gone to nobody (the socket was lost, or we came back to a prompt
    already queued or running); its end is then taken from the history. needs_history: the prompt ended and
    only the history can tell how."""

    def __init__(self, prompt_id: str, missed: bool = False) -> None:
        self.prompt_id = prompt_id
        self.running = False
        self.missed = missed
        self.needs_history = False
        self.seen_any = False  # any message of this prompt but a final `executing null`
        self.images: dict[str, tuple[ImageRef, ...]] = {}

    def feed(self, frame: Any) -> list[Event]:
        """The events of one frame: a decoded JSON message or the bytes of a binary one."""
        if isinstance(frame, bytes):
            return self._preview(frame)
        if not isinstance(frame, dict) or not isinstance(frame.get("data"), dict):
            return []
        data = frame["data"]
        if data.get("prompt_id") != self.prompt_id:
            return []
        if not (frame.get("type") == "executing" and data.get("node") is None):
            self.seen_any = True
        handler = getattr(self, "_on_" + str(frame.get("type")), None)
        return handler(data) if handler else []

    def _preview(self, frame: bytes) -> list[Event]:
        decoded = decode_preview(frame)
        if decoded is None:
            return []
        prompt_id, node_id, mime, image = decoded
        if prompt_id == self.prompt_id or (prompt_id is None and self.running):
            return [Preview(self.prompt_id, mime, image, node_id)]
        return []

    def _on_execution_start(self, data: dict[str, Any]) -> list[Event]:
        self.running = True
        return [Started(self.prompt_id)]

    def _on_execution_cached(self, data: dict[str, Any]) -> list[Event]:
        self.running = True
        return [Cached(self.prompt_id, tuple(str(n) for n in data.get("nodes") or []))]

    def _on_executing(self, data: dict[str, Any]) -> list[Event]:
        if data.get("node") is None:
            # The end, and we saw no execution_success/error: history has it now. With nothing else seen of
            # this prompt, it is the tail of an earlier run of the same prompt_id on this socket: skip it.
            if self.seen_any or self.missed:
                self.needs_history = True
            return []
        self.running = True
        return [NodeStarted(self.prompt_id, str(data["node"]))]

    def _on_progress(self, data: dict[str, Any]) -> list[Event]:
        try:
            return [Progress(self.prompt_id, str(data.get("node")), int(data["value"]), int(data["max"]))]
        except (KeyError, TypeError, ValueError):
            return []

    def _on_executed(self, data: dict[str, Any]) -> list[Event]:
        node_id = str(data.get("node"))
        output = data.get("output") if isinstance(data.get("output"), dict) else {}
        images = tuple(ImageRef.from_output(node_id, item) for item in output.get("images") or []
                       if isinstance(item, dict) and "filename" in item)
        self.images[node_id] = images
        return [NodeExecuted(self.prompt_id, node_id, images)]

    def _on_execution_success(self, data: dict[str, Any]) -> list[Event]:
        self.running = False
        if self.missed:  # executed messages may be lost: the history is the record
            self.needs_history = True
            return []
        images = tuple(image for node_images in self.images.values() for image in node_images)
        return [Succeeded(self.prompt_id, images, "websocket")]

    def _on_execution_error(self, data: dict[str, Any]) -> list[Event]:
        self.running = False
        node_id, node_type = data.get("node_id"), data.get("node_type")
        return [Failed(self.prompt_id, None if node_id is None else str(node_id),
                       None if node_type is None else str(node_type),
                       str(data.get("exception_type", "Exception")), str(data.get("exception_message", "")))]

    def _on_execution_interrupted(self, data: dict[str, Any]) -> list[Event]:
        self.running = False
        node_id = data.get("node_id")
        return [Interrupted(self.prompt_id, None if node_id is None else str(node_id))]
