"""The one client for one ComfyUI URL: HTTP operations, and event streams over its websocket."""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websocket

from workers.comfyui.errors import (ComfyUIError, ComfyUIHTTPError, ComfyUIProtocolError, ComfyUIUnavailable,
                                    PromptRejected)
from workers.comfyui.events import ImageRef
from workers.comfyui.http import HTTPTransport, RetryPolicy, Timeouts
from workers.comfyui.state import PromptState
from workers.comfyui.stream import EventStream, StreamPolicy

log = logging.getLogger("workers.comfyui.client")


@dataclass(frozen=True)
class QueueState:
    running: tuple[str, ...]
    pending: tuple[str, ...]  # in execution order

    def position(self, prompt_id: str) -> int | None:
        """1 = runs next; None when not pending."""
        return self.pending.index(prompt_id) + 1 if prompt_id in self.pending else None


@dataclass(frozen=True)
class Submission:
    prompt_id: str
    number: float
    node_errors: dict[str, Any] = field(default_factory=dict)


class ComfyUIClient:
    def __init__(self, url: str, client_id: str | None = None, *, timeouts: Timeouts = Timeouts(),
                 retry: RetryPolicy = RetryPolicy(), watchdog_seconds: float = 10.0, history_wait: float = 30.0,
                 deaf_seconds: float | None = None):
        """watchdog_seconds: silence before asking ComfyUI where the prompt stands (and pinging the socket);
        deaf_seconds (default 3 x watchdog): no message at all for this long, the prompt still in flight, and
        the socket is opened again."""
        self.url = url.rstrip("/")
        self.client_id = client_id or str(uuid.uuid4())
        self.http = HTTPTransport(self.url, timeouts, retry)
        self.watchdog_seconds = watchdog_seconds
        self.history_wait = history_wait
        self.deaf_seconds = 3 * watchdog_seconds if deaf_seconds is None else deaf_seconds

    # --- information
    def system_stats(self) -> dict[str, Any]:
        return self.http.json("GET", "/system_stats")

    def object_info(self) -> dict[str, Any]:
        """Every node class ComfyUI offers, with its inputs (the model files a loader can load among them)."""
        return self.http.json("GET", "/object_info")

    def queue(self) -> QueueState:
        body = self.http.json("GET", "/queue")
        try:
            running = tuple(str(item[1]) for item in body["queue_running"])
            pending = tuple(str(item[1]) for item in sorted(body["queue_pending"], key=lambda item: item[0]))
        except (KeyError, IndexError, TypeError) as exc:
            raise ComfyUIProtocolError(self.url, f"GET /queue answered an unexpected shape: {exc!r}")
        return QueueState(running, pending)

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None (ComfyUI answers {} while queued or running too)."""
        body = self.http.json("GET", f"/history/{prompt_id}")
        entry = body.get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise ComfyUIProtocolError(self.url, f"history entry of {prompt_id} is {type(entry).__name__}")
        return entry

    def prompt_state(self, prompt_id: str) -> PromptState:
        """Done, running, queued or unknown. The queue is asked first: a prompt_id used again still has the
        earlier run's history entry while the new run waits or runs. ComfyUI takes a prompt off its queue and
        writes its history in one step, so a prompt in neither is unknown."""
        queue = self.queue()
        if prompt_id in queue.running:
            return PromptState("running")
        if prompt_id in queue.pending:
            return PromptState("queued", position=queue.position(prompt_id))
        entry = self.history(prompt_id)
        return PromptState("done", history=entry) if entry is not None else PromptState("unknown")

    # --- work
    def submit(self, graph: dict[str, Any], prompt_id: str | None = None, *, front: bool = False,
               extra_data: dict[str, Any] | None = None) -> Submission:
        """POST /prompt with our client id and a caller-chosen prompt_id, so the prompt can always be found again.

        A failed attempt is retried only after checking ComfyUI did not queue it, so it never runs twice."""
        prompt_id = prompt_id or str(uuid.uuid4())
        body: dict[str, Any] = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = extra_data
        policy = self.http.retry
        last_error: ComfyUIError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.delay(attempt - 1))
                if self._already_submitted(prompt_id):
                    log.info("prompt %s was queued by an earlier attempt on %s", prompt_id, self.url)
                    return Submission(prompt_id, float("nan"))
            try:
                response = self.http.request("POST", "/prompt", json=body, retry=False)
            except ComfyUIHTTPError as exc:
                raise self._rejection(exc) from exc
            except ComfyUIUnavailable as exc:
                last_error = exc
                continue
            answer = self._json_of(response)
            return Submission(str(answer.get("prompt_id", prompt_id)), answer.get("number", float("nan")),
                              answer.get("node_errors") or {})
        assert last_error is not None
        raise ComfyUIUnavailable(self.url, f"POST /prompt failed after {policy.attempts} attempt(s): {last_error.reason}")

    def _already_submitted(self, prompt_id: str) -> bool:
        try:
            return self.prompt_state(prompt_id).status != "unknown"
        except ComfyUIError:
            return False

    def _rejection(self, exc: ComfyUIHTTPError) -> ComfyUIError:
        try:
            body = json.loads(exc.body) if isinstance(exc.body, str) else {}
        except ValueError:
            body = {}
        if isinstance(body, dict) and ("error" in body or "node_errors" in body):
            return PromptRejected(self.url, exc.status, body)
        return exc

    def _json_of(self, response: Any) -> dict[str, Any]:
        try:
            answer = response.json()
        except ValueError:
            raise ComfyUIProtocolError(self.url, f"POST /prompt answered non-JSON: {response.text[:200]!r}")
        if not isinstance(answer, dict):
            raise ComfyUIProtocolError(self.url, "POST /prompt answered a non-object")
        return answer

    def interrupt(self, prompt_id: str) -> None:
        """Stop prompt_id if it is the one running; ComfyUI ignores the call otherwise."""
        self.http.request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def delete(self, *prompt_ids: str) -> None:
        """Remove pending prompts from ComfyUI's queue (a running one is not touched)."""
        self.http.request("POST", "/queue", json={"delete": list(prompt_ids)})

    def cancel(self, prompt_id: str) -> None:
        """Make sure prompt_id never runs to the end: delete it if pending, interrupt it if running."""
        self.delete(prompt_id)
        self.interrupt(prompt_id)

    def delete_history(self, *prompt_ids: str) -> None:
        """Forget finished prompts (ComfyUI answers 200 for unknown ids too)."""
        self.http.request("POST", "/history", json={"delete": list(prompt_ids)})

    def upload_image(self, data: bytes, filename: str, subfolder: str = "", overwrite: bool = True) -> str:
        """Upload an input image; returns the name LoadImage takes."""
        answer = self.http.json("POST", "/upload/image", files={"image": (filename, data)},
                                data={"subfolder": subfolder, "overwrite": "true" if overwrite else "false",
                                      "type": "input"})
        if "name" not in answer:
            raise ComfyUIProtocolError(self.url, f"POST /upload/image answered without a name: {answer}")
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else str(answer["name"])

    def download(self, image: ImageRef) -> bytes:
        return self.http.content("/view", params={"filename": image.filename, "subfolder": image.subfolder,
                                                  "type": image.type})

    def stream(self, ws: websocket.WebSocket | None = None) -> EventStream:
        """The websocket of our client id; open it before submitting (messages are never replayed). ws: one
        already open under our client id (a spare, workers/comfyui/spare.py)."""
        return EventStream(self.url, self.client_id, self.stream_policy(), self.prompt_state, ws)

    def stream_policy(self) -> StreamPolicy:
        return StreamPolicy(self.http.retry, self.http.timeouts.connect, self.watchdog_seconds, self.deaf_seconds,
                            self.history_wait)
