"""What can go wrong talking to one ComfyUI, as typed errors that say which URL, node and exception."""
from __future__ import annotations

from typing import Any


class ComfyUIError(Exception):
    def __init__(self, url: str, message: str):
        super().__init__(f"{message} (ComfyUI {url})")
        self.url = url
        self.reason = message


class ComfyUIUnavailable(ComfyUIError):
    """Connection refused, timed out or 5xx, still after the retries."""


class ComfyUIHTTPError(ComfyUIError):
    def __init__(self, url: str, status: int, message: str, body: Any = None):
        super().__init__(url, message)
        self.status = status
        self.body = body


class PromptRejected(ComfyUIHTTPError):
    """POST /prompt answered 400: the graph did not validate."""

    def __init__(self, url: str, status: int, body: dict[str, Any]):
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        self.error_type = str(error.get("type", "invalid_prompt"))
        self.node_errors: dict[str, Any] = body.get("node_errors") or {}
        summary = summarize_rejection(error, self.node_errors)
        super().__init__(url, status, summary, body)


class ComfyUIProtocolError(ComfyUIError):
    """ComfyUI answered something that is not what its protocol promises."""


class PromptLost(ComfyUIError):
    """ComfyUI knows nothing of the prompt: neither queued, running nor in its history (it restarted)."""

    def __init__(self, url: str, prompt_id: str):
        self.prompt_id = prompt_id
        super().__init__(url, f"prompt {prompt_id} is unknown to ComfyUI (not queued, running or in history)")


def summarize_rejection(error: dict[str, Any], node_errors: dict[str, Any]) -> str:
    """One line from ComfyUI's validation answer: the error, then each node's errors."""
    parts = [str(error.get("message") or "prompt rejected")]
    if error.get("details"):
        parts[0] += f": {error['details']}"
    for node_id, entry in node_errors.items():
        if not isinstance(entry, dict):
            continue
        reasons = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in entry.get("errors", []) if isinstance(e, dict))
        parts.append(f"node {node_id} ({entry.get('class_type')}): {reasons}")
    return " | ".join(parts)
