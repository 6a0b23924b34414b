"""Reading a finished prompt's /history entry: its images, and how it ended."""
from __future__ import annotations

from typing import Any

from workers.comfyui.events import Failed, ImageRef, Interrupted, Succeeded, Terminal


def images_in_history(entry: dict[str, Any]) -> list[ImageRef]:
    """Every image of every output node."""
    outputs = entry.get("outputs")
    if not isinstance(outputs, dict):
        return []
    return [ImageRef.from_output(str(node_id), item)
            for node_id, output in outputs.items() if isinstance(output, dict)
            for item in output.get("images", []) if isinstance(item, dict) and "filename" in item]


def terminal_from_history(prompt_id: str, entry: dict[str, Any]) -> Terminal:
    """The end of a prompt as its history records it (status messages, then outputs)."""
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    for message in reversed(status.get("messages") or []):
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        kind, data = message
        if kind == "execution_error":
            return Failed(prompt_id, _str(data.get("node_id")), _str(data.get("node_type")),
                          str(data.get("exception_type", "Exception")), str(data.get("exception_message", "")))
        if kind == "execution_interrupted":
            return Interrupted(prompt_id, _str(data.get("node_id")))
    if status.get("status_str") == "error":
        return Failed(prompt_id, None, None, "ExecutionError", "ComfyUI recorded the prompt as failed")
    return Succeeded(prompt_id, tuple(images_in_history(entry)), "history")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
