"""Typed events for one prompt, made from ComfyUI's websocket messages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRef:
    filename: str
    subfolder: str
    type: str
    node_id: str

    @classmethod
    def from_output(cls, node_id: str, item: dict[str, Any]) -> "ImageRef":
        return cls(str(item["filename"]), str(item.get("subfolder", "")), str(item.get("type", "output")), node_id)


@dataclass(frozen=True)
class Event:
    prompt_id: str


@dataclass(frozen=True)
class Started(Event):
    pass


@dataclass(frozen=True)
class Cached(Event):
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class NodeStarted(Event):
    node_id: str


@dataclass(frozen=True)
class Progress(Event):
    node_id: str
    value: int
    max: int


@dataclass(frozen=True)
class NodeExecuted(Event):
    node_id: str
    images: tuple[ImageRef, ...]


@dataclass(frozen=True)
class Preview(Event):
    mime: str
    data: bytes = field(repr=False)
    node_id: str | None = None


@dataclass(frozen=True)
class Idle(Event):
    """No message for a while (only when follow() was given a heartbeat): a chance to check deadlines."""


@dataclass(frozen=True)
class Reconnected(Event):
    """The socket was lost and is back; messages in between may be missing."""


@dataclass(frozen=True)
class Terminal(Event):
    pass


@dataclass(frozen=True)
class Succeeded(Terminal):
    images: tuple[ImageRef, ...]
    source: str  # "websocket" or "history"


@dataclass(frozen=True)
class Failed(Terminal):
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str


@dataclass(frozen=True)
class Interrupted(Terminal):
    node_id: str | None
