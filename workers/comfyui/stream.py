"""Following one prompt over ComfyUI's websocket, with reconnects and a watchdog so no end is ever missed."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import websocket

from workers.comfyui.errors import ComfyUIProtocolError, ComfyUIUnavailable, PromptLost
from workers.comfyui.events import Event, Idle, Reconnected, Terminal
from workers.comfyui.history import terminal_from_history
from workers.comfyui.http import RetryPolicy
from workers.comfyui.state import PromptState
from workers.comfyui.tracker import PromptTracker

log = logging.getLogger("workers.comfyui.stream")

FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
_PONG = object()


@dataclass(frozen=True)
class StreamPolicy:
    """How a stream (re)connects, when it suspects its socket, and how long it waits for a history entry."""
    retry: RetryPolicy
    connect_timeout: float
    watchdog_seconds: float
    deaf_seconds: float
    history_wait: float


class _Silent(Exception):
    pass


class _Dropped(Exception):
    pass


class _Liveness:
    """What the socket gave lately, as the watchdog sees it."""

    def __init__(self, watchdog_seconds: float, deaf_seconds: float):
        self.watchdog_seconds = watchdog_seconds
        self.deaf_seconds = deaf_seconds
        self.last_frame = self.last_message = time.monotonic()  # a pong is a frame but not a message
        self.awaiting_pong = False

    def wait(self, heartbeat: float | None) -> float:
        left = self.watchdog_seconds - (time.monotonic() - self.last_frame)
        return max(0.001, min(left, heartbeat) if heartbeat else left)

    def heard(self, frame: Any) -> None:
        self.last_frame, self.awaiting_pong = time.monotonic(), False
        if frame is not _PONG:
            self.last_message = self.last_frame

    def watchdog_fired(self) -> bool:
        """True after watchdog_seconds without a frame; the watchdog then starts again."""
        if time.monotonic() - self.last_frame < self.watchdog_seconds:
            return False
        self.last_frame = time.monotonic()
        return True

    def deaf(self) -> bool:
        # No answer to our ping: dead. Pongs but no message for long: deaf, since ComfyUI forgets a client id's
        # registration whenever an older socket with that id closes.
        return self.awaiting_pong or self.last_frame - self.last_message >= self.deaf_seconds

    def reconnected(self) -> None:
        self.last_message, self.awaiting_pong = time.monotonic(), False

    def restart_watchdog(self) -> None:
        self.last_frame = time.monotonic()


def connect(url: str, client_id: str, policy: StreamPolicy) -> websocket.WebSocket:
    """A websocket to ComfyUI at `url` under `client_id`, retried as the policy says (ComfyUIUnavailable)."""
    base = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    ws_url = f"{base}/ws?clientId={client_id}"
    retry = policy.retry
    cause = ""
    for attempt in range(retry.attempts):
        if attempt:
            time.sleep(retry.delay(attempt - 1))
        try:
            # A text frame's UTF-8 is checked where it is parsed (json.loads: an unreadable frame is skipped);
            # websocket-client's own check runs in pure Python, byte by byte: a third of the socket's CPU.
            ws = websocket.WebSocket(skip_utf8_validation=True)
            ws.connect(ws_url, timeout=policy.connect_timeout)
            ws.send(FEATURE_FLAGS)
            return ws
        except (OSError, websocket.WebSocketException) as exc:
            cause = f"{type(exc).__name__}: {exc}"
            log.warning("websocket %s failed (attempt %d/%d): %s", ws_url, attempt + 1, retry.attempts, cause)
    raise ComfyUIUnavailable(url, f"websocket failed after {retry.attempts} attempt(s): {cause}")


class EventStream:
    """The websocket of one client id. Open it before submitting; follow() one prompt at a time.

    prompt_state: asks ComfyUI where a prompt stands (the client's prompt_state).
    ws: a socket already open under `client_id` (a spare, workers/comfyui/spare.py), used until it drops."""

    def __init__(self, url: str, client_id: str, policy: StreamPolicy, prompt_state: Callable[[str], PromptState],
                 ws: websocket.WebSocket | None = None):
        self.url = url
        self.client_id = client_id
        self.policy = policy
        self.prompt_state = prompt_state
        self.ws = ws

    def __enter__(self) -> "EventStream":
        return self.open()

    def __exit__(self, kind: Any, *exc: object) -> None:
        # Ended normally, the job's messages are all in and its client id is used no more: no need to wait for
        # ComfyUI's echo. After an error the prompt may be followed again under this id, soon, by another socket.
        self.close(echo_wait=0 if kind is None else 1)

    def open(self) -> "EventStream":
        if self.ws is None:
            self.ws = connect(self.url, self.client_id, self.policy)
        return self

    def close(self, echo_wait: float = 1) -> None:
        """echo_wait: seconds to wait for ComfyUI's close frame. A reconnect waits for it: ComfyUI forgets the
        client id of a socket once that socket is closed, even when a newer socket has registered it since."""
        if self.ws is not None:
            try:
                self.ws.close(timeout=echo_wait)
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
        tracker = PromptTracker(prompt_id, missed=resumed)
        liveness = _Liveness(self.policy.watchdog_seconds, self.policy.deaf_seconds)
        while not tracker.needs_history:
            for event in self._next_events(tracker, liveness, heartbeat):
                yield event
                if isinstance(event, Terminal):
                    return
        yield self._await_history(prompt_id)

    def _next_events(self, tracker: PromptTracker, liveness: _Liveness, heartbeat: float | None) -> Iterator[Event]:
        """The events of one wait on the socket: a frame's, the watchdog's, or a reconnect's."""
        try:
            frame = self._receive(liveness.wait(heartbeat))
        except _Silent:
            yield from self._on_silence(tracker, liveness, heartbeat)
        except _Dropped:
            log.warning("socket of %s (%s) dropped while following %s: reconnecting", self.url, self.client_id,
                        tracker.prompt_id)
            yield from self._reconnect(tracker, liveness)
            liveness.restart_watchdog()
        else:
            liveness.heard(frame)
            yield from tracker.feed(frame)

    def _on_silence(self, tracker: PromptTracker, liveness: _Liveness, heartbeat: float | None) -> Iterator[Event]:
        """Once the watchdog fires: ask ComfyUI whether the prompt ended, then ping the socket, or reconnect it."""
        if liveness.watchdog_fired():
            terminal = self._reconcile(tracker.prompt_id)
            if terminal is not None:
                yield terminal
                return
            if liveness.deaf():
                log.warning("socket of %s (%s) is %s: reconnecting", self.url, self.client_id,
                            "silent and answers no ping" if liveness.awaiting_pong else "alive but hears nothing")
                yield from self._reconnect(tracker, liveness)
                return
            self._ping()
            liveness.awaiting_pong = True
        if heartbeat:
            yield Idle(tracker.prompt_id)

    def _ping(self) -> None:
        try:
            if self.ws is not None:
                self.ws.ping()
        except (OSError, websocket.WebSocketException):
            pass

    def _reconnect(self, tracker: PromptTracker, liveness: _Liveness) -> Iterator[Event]:
        """Open the socket again, then ask ComfyUI where the prompt stands; sets needs_history when it ended."""
        self.close()
        self.open()
        tracker.missed = True
        yield Reconnected(tracker.prompt_id)
        if self._reconcile(tracker.prompt_id) is not None:
            tracker.needs_history = True
        liveness.reconnected()

    def _reconcile(self, prompt_id: str) -> Terminal | None:
        """The prompt's end if its history has it; PromptLost when ComfyUI does not know it."""
        state = self.prompt_state(prompt_id)
        if state.status == "unknown":
            raise PromptLost(self.url, prompt_id)
        if state.status == "done" and state.history is not None:
            return terminal_from_history(prompt_id, state.history)
        return None

    def _await_history(self, prompt_id: str) -> Terminal:
        """ComfyUI writes history just after execution_success: poll for it, briefly."""
        deadline = time.monotonic() + self.policy.history_wait
        delay = 0.02
        while True:
            terminal = self._reconcile(prompt_id)
            if terminal is not None:
                return terminal
            if time.monotonic() > deadline:
                raise ComfyUIProtocolError(self.url, f"prompt {prompt_id} ended but its history "
                                                     f"did not appear within {self.policy.history_wait}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
