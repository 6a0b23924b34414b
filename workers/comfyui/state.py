"""Where ComfyUI says a prompt stands, as the client reports it and a stream checks it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptState:
    status: str  # "done", "running", "queued" or "unknown"
    history: dict[str, Any] | None = None
    position: int | None = None
