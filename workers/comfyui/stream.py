"""Following one prompt over ComfyUI's websocket, with reconnects and a watchdog so no end is ever missed."""
from __future__ import annotations

import json
import logging
import struct
import time
from typing import TYPE_CHECKING, Any, Iterator

import websocket

from workers.comfyui.errors import ComfyUIProtocolError, ComfyUIUnavailable, PromptLost
from workers.comfyui.events import (Cached, Event, Failed, Idle, ImageRef, Interrupted, NodeExecuted, NodeStarted,
                                    Preview, Progress, Reconnected, Started, Succeeded, Terminal)
from workers.comfyui.history import terminal_from_history

if TYPE_CHECKING:
    from workers.comfyui.client import ComfyUIClient

log = logging.getLogger("workers.comfyui.stream")

FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4
IMAGE_MIME = {1: "image/jpeg", 2: "image/png"}
_PONG = object()


class _Silent(Exception):
    pass


class _Dropped(Exception):
    pass


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
    """Turns the messages of one client id into events of one prompt."""

    def __init__(self, prompt_id: str):
        self.prompt_id = prompt_id
        self.running = False
        self.missed = False  # the socket was lost while the prompt was in flight
        self.needs_history = False
        self.seen_any = False  # any message of this prompt but a final `executing null`
        self.images: dict[str, tuple[ImageRef, ...]] = {}

    def feed(self, frame: Any) -> list[Event]:
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


class EventStream:
    """The websocket of one client id. Open it before submitting; follow() one prompt at a time."""

    def __init__(self, client: "ComfyUIClient"):
        self.client = client
        base = client.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.ws_url = f"{base}/ws?clientId={client.client_id}"
        self.ws: websocket.WebSocket | None = None

    def __enter__(self) -> "EventStream":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> "EventStream":
        policy = self.client.http.retry
        cause = ""
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.delay(attempt - 1))
            try:
                ws = websocket.WebSocket()
                ws.connect(self.ws_url, timeout=self.client.http.timeouts.connect)
                ws.send(FEATURE_FLAGS)
                self.ws = ws
                return self
            except (OSError, websocket.WebSocketException) as exc:
                cause = f"{type(exc).__name__}: {exc}"
                log.warning("websocket %s failed (attempt %d/%d): %s", self.ws_url, attempt + 1, policy.attempts, cause)
        raise ComfyUIUnavailable(self.client.url, f"websocket failed after {policy.attempts} attempt(s): {cause}")

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except (OSError, websocket.WebSocketException):
                pass
            self.ws = None

    def _receive(self, timeout: float) -> Any:
        if self.ws is None:
            raise _Dropped()
        self.ws.settimeout(timeout)
        try:
            opcode, data = self.ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            raise _Silent()
        except (OSError, websocket.WebSocketException) as exc:
            raise _Dropped() from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise _Dropped()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return data
        if opcode == websocket.ABNF.OPCODE_TEXT:
            try:
                return json.loads(data)
            except ValueError:
                return None
        return _PONG

    def follow(self, prompt_id: str, heartbeat: float | None = None, resumed: bool = False) -> Iterator[Event]:
        """Events of one prompt, ending with exactly one Terminal event (Succeeded, Failed or Interrupted).

        resumed: the prompt was already queued or running when we started listening, so some of its messages
        (`executed` among them) went to nobody: its outputs are then taken from the history.
        Raises PromptLost when ComfyUI no longer knows the prompt, ComfyUIUnavailable when it cannot be reached."""
        tracker = PromptTracker(prompt_id)
        tracker.missed = resumed
        watchdog = self.client.watchdog_seconds
        last_frame = last_message = time.monotonic()
        awaiting_pong = False
        while True:
            quiet = time.monotonic() - last_frame
            wait = max(0.001, min(watchdog - quiet, heartbeat) if heartbeat else watchdog - quiet)
            try:
                frame = self._receive(wait)
            except _Silent:
                if time.monotonic() - last_frame >= watchdog:
                    last_frame = time.monotonic()
                    terminal = self._reconcile(tracker)
                    if terminal is not None:
                        yield terminal
                        return
                    # No answer to our ping: dead. Pongs but no message for long: deaf, since ComfyUI forgets a
                    # client id's registration whenever an older socket with that id closes. Either way: reconnect.
                    if awaiting_pong or last_frame - last_message >= self.client.deaf_seconds:
                        log.warning("socket %s is %s: reconnecting", self.ws_url,
                                    "silent and answers no ping" if awaiting_pong else "alive but hears nothing")
                        yield from self._recover(tracker)
                        if tracker.needs_history:
                            yield self._await_history(tracker)
                            return
                        awaiting_pong, last_message = False, time.monotonic()
                        continue
                    self._ping()
                    awaiting_pong = True
                if heartbeat:
                    yield Idle(prompt_id)
                continue
            except _Dropped:
                log.warning("socket %s dropped while following %s: reconnecting", self.ws_url, prompt_id)
                yield from self._recover(tracker)
                if tracker.needs_history:
                    yield self._await_history(tracker)
                    return
                last_frame = last_message = time.monotonic()
                awaiting_pong = False
                continue
            last_frame, awaiting_pong = time.monotonic(), False
            if frame is not _PONG:
                last_message = last_frame
            for event in tracker.feed(frame):
                yield event
                if isinstance(event, Terminal):
                    return
            if tracker.needs_history:
                yield self._await_history(tracker)
                return

    def _ping(self) -> None:
        try:
            if self.ws is not None:
                self.ws.ping()
        except (OSError, websocket.WebSocketException):
            pass

    def _recover(self, tracker: PromptTracker) -> Iterator[Event]:
        """Reconnect, then ask ComfyUI where the prompt stands; sets needs_history when it is done."""
        self.close()
        self.open()
        tracker.missed = True
        yield Reconnected(tracker.prompt_id)
        if self._reconcile(tracker) is not None:
            tracker.needs_history = True

    def _reconcile(self, tracker: PromptTracker) -> Terminal | None:
        state = self.client.prompt_state(tracker.prompt_id)
        if state.status == "unknown":
            raise PromptLost(self.client.url, tracker.prompt_id)
        if state.status == "done" and state.history is not None:
            return terminal_from_history(tracker.prompt_id, state.history)
        return None

    def _await_history(self, tracker: PromptTracker) -> Terminal:
        """ComfyUI writes history just after execution_success: poll for it, briefly."""
        deadline = time.monotonic() + self.client.history_wait
        delay = 0.02
        while True:
            state = self.client.prompt_state(tracker.prompt_id)
            if state.status == "done" and state.history is not None:
                return terminal_from_history(tracker.prompt_id, state.history)
            if state.status == "unknown":
                raise PromptLost(self.client.url, tracker.prompt_id)
            if time.monotonic() > deadline:
                raise ComfyUIProtocolError(self.client.url, f"prompt {tracker.prompt_id} ended but its history "
                                                            f"did not appear within {self.client.history_wait}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
