"""Recordings of a real ComfyUI 0.3.64 (tests/data/comfyui-traces/*.jsonl) and the one loader that reads them.

A recording holds, one JSON object a line, what a recorder saw of the server: websocket frames (``ws``,
``ws_binary``), HTTP exchanges (``http``), the recorder's own socket actions (``ws_open``, ``ws_sent``,
``ws_close``, ``ws_closed_by_client``, ``ws_error``) and ``note``s on what it did. ``load_recording`` reads one
into a ``Recording``; the replay server (tests/replay) and the fidelity replay (tests/fidelity) build their
views of it from that."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from testkit.paths import ROOT

TRACES_DIR = ROOT / "tests" / "data" / "comfyui-traces"
WORKFLOWS_DIR = TRACES_DIR / "workflows"
TERMINAL_TYPES = ("execution_success", "execution_error", "execution_interrupted")


@dataclass
class Recording:
    name: str
    path: Path
    events: list[dict[str, Any]]  # in recorded order, each with its 1-based line in the file as "_line"
    labels: dict[str, str]  # socket label -> the client id it connected with, in order of first connection

    @property
    def duration(self) -> float:
        return max((event.get("t", 0.0) for event in self.events), default=0.0)

    @property
    def workflows_dir(self) -> Path:
        return self.path.parent / "workflows"

    def workflow(self, file_name: str) -> dict[str, Any]:
        """A workflow the recorder posted, from the workflows/ folder beside the recording."""
        return load_workflow(file_name, self.workflows_dir)

    def note_before(self, index: int) -> str | None:
        """The text of the last note before event `index`."""
        return next((event["text"] for event in reversed(self.events[:index]) if event["kind"] == "note"), None)

    def named_workflow(self, index: int) -> tuple[str, dict[str, Any]] | None:
        """The workflow named by the last note before event `index` (the recorder noted which one it posted
        next), as (file name, graph); None if that note names no workflow."""
        note = self.note_before(index)
        file_name = f"{note}.json"
        if note is None or not (self.workflows_dir / file_name).exists():
            return None
        return file_name, self.workflow(file_name)

    def posts(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(event index, exchange) of every POST the recorder made, in order."""
        return ((index, event) for index, event in enumerate(self.events)
                if event["kind"] == "http" and event["method"] == "POST")

    def history_entry(self, prompt_id: str, after: int) -> dict[str, Any] | None:
        """The first non-empty answer of ``GET /history/<prompt_id>`` after event `after`, before that prompt id
        is posted again."""
        for event in self.events[after + 1:]:
            if event["kind"] != "http":
                continue
            if posted_prompt_id(event) == prompt_id:
                return None
            if event["method"] == "GET" and event["path"].split("?")[0] == f"/history/{prompt_id}":
                entry = (event.get("body") or {}).get(prompt_id)
                if entry:
                    return entry
        return None

    def prompt_items(self) -> dict[str, list[tuple[int, list[Any]]]]:
        """prompt id -> every ``[number, prompt_id, graph, extra_data, outputs]`` item a /history or /queue answer
        held for it, as (event index, item), in recorded order."""
        found: dict[str, list[tuple[int, list[Any]]]] = {}
        for index, event in enumerate(self.events):
            if event["kind"] == "http" and "body" in event:
                for item in _prompt_items_of(event["body"]):
                    found.setdefault(item[1], []).append((index, item))
        return found


def load_recording(path: str | Path) -> Recording:
    """A recording by its file, or by its name in the recordings folder ("invalid_workflows")."""
    path = Path(path) if Path(path).suffix else TRACES_DIR / f"{path}.jsonl"
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            events.append({**json.loads(line), "_line": number})
    labels: dict[str, str] = {}
    for event in events:
        if event["kind"] == "ws_open":
            labels.setdefault(event["client"], event["client_id"])
    return Recording(path.stem, path, events, labels)


def load_workflow(file_name: str, directory: Path = WORKFLOWS_DIR) -> dict[str, Any]:
    """A workflow (API format) the recorder posted."""
    return json.loads((directory / file_name).read_text(encoding="utf-8"))


def recording_files(directory: str | Path = TRACES_DIR) -> list[Path]:
    return sorted(Path(directory).glob("*.jsonl"))


def prompt_of(frame: dict[str, Any]) -> str | None:
    """The prompt id a websocket frame names, if any."""
    data = frame.get("data")
    return data.get("prompt_id") if isinstance(data, dict) else None


def posted_prompt_id(event: dict[str, Any]) -> str | None:
    """The prompt id a recorded ``POST /prompt`` answered with (None for any other exchange, or a rejection)."""
    body = event.get("body")
    if event.get("method") == "POST" and event.get("path") == "/prompt" and isinstance(body, dict):
        return body.get("prompt_id")
    return None


def _prompt_items_of(body: Any) -> Iterator[list[Any]]:
    """Every ``[number, prompt_id, graph, extra_data, outputs]`` list in a /history or /queue answer."""
    if not isinstance(body, dict):
        return
    for key in ("queue_running", "queue_pending"):
        items = body.get(key)
        if isinstance(items, list):
            yield from (item for item in items if _is_prompt_item(item))
    for value in body.values():
        if isinstance(value, dict) and _is_prompt_item(value.get("prompt")):
            yield value["prompt"]


def _is_prompt_item(item: Any) -> bool:
    return (isinstance(item, list) and len(item) >= 4 and isinstance(item[0], int) and isinstance(item[1], str)
            and isinstance(item[2], dict))
