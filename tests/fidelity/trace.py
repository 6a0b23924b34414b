"""Load a recording of a real ComfyUI 0.3.64 server into timed replay actions and expected observations.

A recording (``comfyui-traces/*.jsonl``) holds what a client saw: websocket frames, HTTP exchanges, and notes
on what the recorder did.  ``load_trace`` turns it into:

- ``actions``: what the replay must do, each at the recorded time the recorder started it: open a socket as
  label X (with a client id; a second label with an already seen client id is a reconnect), send a frame, POST
  /prompt (graph, client id, caller-chosen prompt_id, front, extra_data), any other HTTP request with its
  recorded method/path/body, close a socket, kill the server with a signal, probe the dead server, restart it.
- ``events``: the recording itself (the expected observations), unchanged.

POST /prompt bodies are mostly not in the recordings.  The graph is recovered from any body of the same trace
that holds ``[number, prompt_id, graph, extra_data, outputs]`` for that prompt_id (``/history`` or ``/queue``
answers); ``number < 0`` means ``"front": true``; a prompt_id that is not a uuid was chosen by the caller;
``extra_data`` tells the client id (absent: posted without one) and any other extra data.  Where nothing in the
trace holds the graph, a workflow file is chosen by scenario (``FALLBACK_WORKFLOWS``); each such fallback says so
in ``Action.source``.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Frames after which the recorder acted (it waited for the end of a prompt, then slept).  The replay waits
# for the same frame (the same occurrence on the same socket) before it runs the actions that followed it.
TERMINAL_KEYS = ("execution_success", "execution_error", "execution_interrupted", "executing:null")
# An action recorded this soon after a ``progress`` frame was the recorder's reaction to it.
REACTION = 0.005

# Scenario -> (workflow file, input overrides per class_type) for prompts whose graph no body of the trace
# holds.  Each entry is a judgement from the recorded frames (node ids executed, progress max, file prefix).
FALLBACK_WORKFLOWS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    # server_killed_*: the prompt never finished, so no history; the frames show SlowProgress with max 30.
    "server_killed_SIGINT": ("slow_progress.json", {"SlowProgress": {"steps": 30}}),
    "server_killed_SIGKILL": ("slow_progress.json", {"SlowProgress": {"steps": 30}}),
    "server_killed_SIGTERM": ("slow_progress.json", {"SlowProgress": {"steps": 30}}),
    # feature_flags: executing 1,2,4,3, SaveImageWebsocket progress on node 4, files "harness_core_ws_*".
    "feature_flags": ("core_image_ws_progress.json", {}),
    # timing_*: the recorder posted the scenario's workflow several times and never fetched the history.
    "timing_core_image": ("core_image.json", {}),
    "timing_core_image_ws_progress": ("core_image_ws_progress.json", {}),
    "timing_slow_progress": ("slow_progress.json", {}),
    "timing_sd15_random_ksampler": ("sd15_random_ksampler.json", {}),
}


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(UUID_RE.match(value))


def frame_key(frame: dict[str, Any]) -> str:
    """The name a frame is counted under for anchors: its type, or ``executing:null`` for the end marker."""
    ftype = frame.get("type")
    data = frame.get("data")
    if ftype == "executing" and isinstance(data, dict) and "node" in data and data["node"] is None:
        return "executing:null"
    return str(ftype)


@dataclass
class Anchor:
    """The ``occurrence``-th (0-based) frame counted under ``key`` on socket ``client``, recorded at ``t``."""

    client: str
    key: str
    occurrence: int
    t: float


@dataclass
class Action:
    t: float  # recorded time the recorder started this action (seconds from scenario start)
    kind: str  # ws_open ws_send ws_close post_prompt http kill probe_http probe_ws restart
    line: int  # 1-based line of the trace event it comes from
    client: str | None = None  # socket label (ws_*), or the label whose id a prompt was posted with
    client_id: str | None = None  # recorded client id (ws_open, post_prompt)
    frame: dict[str, Any] | None = None  # ws_send
    method: str | None = None  # http
    path: str | None = None  # http
    json_body: Any = None  # http: a JSON request body (ids inside are mapped at replay time)
    raw_body: str | None = None  # http: a raw request body
    has_body: bool = False
    graph: dict[str, Any] | None = None  # post_prompt
    prompt_id: str | None = None  # post_prompt: the recorded id the server answered (None: rejected)
    caller_prompt_id: str | None = None  # post_prompt: "prompt_id" sent in the POST (caller-chosen)
    front: bool = False
    extra_data: dict[str, Any] | None = None  # post_prompt: extra_data besides client_id
    signal: str | None = None  # kill: "SIGKILL" ...
    text: str | None = None  # notes that drove the action
    done_t: float | None = None  # kill: recorded "server process exited"; restart: recorded "start.sh" done
    anchor: Anchor | None = None
    source: str = ""  # how the graph / body was obtained

    def describe(self) -> str:
        bits = [f"t={self.t:.4f}", self.kind]
        for name in ("client", "method", "path", "signal", "prompt_id", "caller_prompt_id"):
            value = getattr(self, name)
            if value:
                bits.append(f"{name}={value}")
        if self.front:
            bits.append("front")
        if self.source:
            bits.append(f"[{self.source}]")
        return " ".join(bits)


@dataclass
class Trace:
    name: str
    path: Path
    events: list[dict[str, Any]]
    actions: list[Action]
    # Prompts the recorded server already held before the scenario (history entries the scenario read but
    # never posted): the replay posts these first, so the fresh server holds the same kind of state.
    preamble: list[Action] = field(default_factory=list)
    client_ids: dict[str, str] = field(default_factory=dict)  # label -> recorded client id

    @property
    def duration(self) -> float:
        return max((e.get("t", 0.0) for e in self.events), default=0.0)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    events = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            event = json.loads(line)
            event["_line"] = number
            events.append(event)
    return events


def _prompt_entries(body: Any) -> Iterable[list[Any]]:
    """Every ``[number, prompt_id, graph, extra_data, outputs]`` list in a /history or /queue answer."""
    if not isinstance(body, dict):
        return
    for key in ("queue_running", "queue_pending"):
        items = body.get(key)
        if isinstance(items, list):
            for item in items:
                if _is_entry(item):
                    yield item
    for value in body.values():
        if isinstance(value, dict) and _is_entry(value.get("prompt")):
            yield value["prompt"]


def _is_entry(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) >= 4
        and isinstance(item[0], int)
        and isinstance(item[1], str)
        and isinstance(item[2], dict)
    )


def _entries_by_id(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, list[Any]]]]:
    """prompt_id -> [(index of the event holding it, entry)], in trace order."""
    found: dict[str, list[tuple[int, list[Any]]]] = {}
    for index, event in enumerate(events):
        if event.get("kind") == "http" and "body" in event:
            for entry in _prompt_entries(event["body"]):
                found.setdefault(entry[1], []).append((index, entry))
    return found


def _load_workflow(workflows: Path, name: str) -> dict[str, Any]:
    with open(workflows / name, encoding="utf-8") as fh:
        return json.load(fh)


def _apply_overrides(graph: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    graph = copy.deepcopy(graph)
    for node in graph.values():
        for name, value in overrides.get(node.get("class_type"), {}).items():
            node.setdefault("inputs", {})[name] = value
    return graph


def vary_graph(graph: dict[str, Any], run: int) -> dict[str, Any]:
    """The ``run``-th re-post of a fallback workflow, changed at its source so the server does not serve it from
    its cache: the recorded re-runs executed every node again (timing_core_image*) or only the sampler
    (timing_sd15: execution_cached ["4","5","6","7"]), which is what a new seed / colour gives."""
    if run == 0:
        return graph
    graph = copy.deepcopy(graph)
    changed = False
    for node in graph.values():
        inputs = node.get("inputs", {})
        if isinstance(inputs.get("seed"), int):
            inputs["seed"] += run
            changed = True
    if not changed:
        for node in graph.values():
            inputs = node.get("inputs", {})
            if node.get("class_type") == "EmptyImage" and isinstance(inputs.get("color"), int):
                inputs["color"] = (inputs["color"] + run) % 0xFFFFFF
    return graph


def _post_client(events: list[dict[str, Any]], prompt_id: str | None, labels: dict[str, str]) -> str | None:
    """The label of the socket that received the prompt's execution_start (its submitting client)."""
    if prompt_id is None:
        return None
    for event in events:
        if event.get("kind") == "ws":
            frame = event.get("frame", {})
            data = frame.get("data")
            if frame.get("type") == "execution_start" and isinstance(data, dict) and data.get("prompt_id") == prompt_id:
                return event.get("client")
    return None


def load_trace(path: str | Path, workflows: str | Path | None = None) -> Trace:
    path = Path(path)
    workflows = Path(workflows) if workflows else path.parent / "workflows"
    name = path.stem
    events = read_events(path)
    entries = _entries_by_id(events)

    labels: dict[str, str] = {}  # label -> recorded client id
    for event in events:
        if event.get("kind") == "ws_open":
            labels.setdefault(event["client"], event["client_id"])
    first_label = next(iter(labels), None)

    actions: list[Action] = []
    posted_ids: set[str] = set()
    fallback_runs = 0
    last_note: str | None = None
    closed: set[str] = set()

    for index, event in enumerate(events):
        kind = event.get("kind")
        t = float(event.get("t", 0.0))
        line = event["_line"]
        if kind == "ws_open":
            actions.append(Action(t=t, kind="ws_open", line=line, client=event["client"], client_id=event["client_id"]))
        elif kind == "ws_sent":
            actions.append(Action(t=t, kind="ws_send", line=line, client=event["client"], frame=event["frame"]))
        elif kind in ("ws_close", "ws_closed_by_client"):
            label = event["client"]
            # The client closed its socket if the recording says so for this label; the close frame the
            # server echoed may be logged just before that.  The action starts at the earlier of the two.
            said_by_client = any(
                e.get("kind") == "ws_closed_by_client" and e.get("client") == label for e in events
            )
            if said_by_client and label not in closed:
                closed.add(label)
                actions.append(Action(t=t, kind="ws_close", line=line, client=label))
        elif kind == "note":
            text = str(event.get("text", ""))
            last_note = text
            match = re.match(r"kill -(SIG[A-Z]+)", text)
            if match:
                exited = next(
                    (float(e["t"]) for e in events[index + 1:] if e.get("kind") == "note" and e.get("text") == "server process exited"),
                    None,
                )
                actions.append(Action(t=t, kind="kill", line=line, signal=match.group(1), text=text, done_t=exited))
            elif text == "HTTP after kill":
                actions.append(Action(t=t, kind="probe_http", line=line, text=text, method="GET", path="/queue"))
            elif text == "ws reconnect after kill":
                actions.append(Action(t=t, kind="probe_ws", line=line, text=text, client=first_label,
                                      client_id=labels.get(first_label or "")))
            elif text.startswith("restarting server"):
                done = next(
                    (float(e["t"]) for e in events[index + 1:] if e.get("kind") == "note" and e.get("text") == "start.sh"),
                    None,
                )
                actions.append(Action(t=t, kind="restart", line=line, text=text, done_t=done))
        elif kind == "http":
            start = t - float(event.get("elapsed") or 0.0)
            method = event["method"]
            http_path = event["path"]
            body = event.get("body")
            if method == "POST" and http_path == "/prompt" and "request" not in event and "request_raw" not in event:
                action = Action(t=start, kind="post_prompt", line=line, method=method, path=http_path)
                recorded_id = body.get("prompt_id") if isinstance(body, dict) and event.get("status") == 200 else None
                action.prompt_id = recorded_id
                entry = None
                if recorded_id is not None:
                    candidates = entries.get(recorded_id, [])
                    # The first entry held after this POST (a reused caller id is overwritten later).
                    later = [e for i, e in candidates if i > index]
                    entry = (later or [e for _, e in candidates] or [None])[0]
                if entry is not None:
                    number, _, graph, extra = entry[0], entry[1], entry[2], entry[3]
                    action.graph = copy.deepcopy(graph)
                    action.front = number < 0
                    extra = dict(extra or {})
                    cid = extra.pop("client_id", None)
                    action.client_id = cid
                    action.client = next((lab for lab, c in labels.items() if c == cid), None)
                    action.extra_data = extra or None
                    action.source = "graph from a /history or /queue body of this trace"
                elif last_note and (workflows / f"{last_note}.json").exists():
                    action.graph = _load_workflow(workflows, f"{last_note}.json")
                    action.client = first_label
                    action.client_id = labels.get(first_label or "")
                    action.source = f"workflows/{last_note}.json (named by the preceding note)"
                elif name in FALLBACK_WORKFLOWS:
                    file_name, overrides = FALLBACK_WORKFLOWS[name]
                    graph = _apply_overrides(_load_workflow(workflows, file_name), overrides)
                    action.graph = vary_graph(graph, fallback_runs)
                    fallback_runs += 1
                    label = _post_client(events, recorded_id, labels) or first_label
                    action.client = label
                    action.client_id = labels.get(label or "")
                    action.source = f"FALLBACK workflows/{file_name} {overrides or ''} run {fallback_runs}: not recoverable from the trace"
                else:
                    raise ValueError(f"{path.name}:{line}: cannot recover the graph of POST /prompt {recorded_id}")
                if recorded_id is not None and not is_uuid(recorded_id):
                    action.caller_prompt_id = recorded_id
                if recorded_id is not None:
                    posted_ids.add(recorded_id)
                actions.append(action)
            else:
                action = Action(t=start, kind="http", line=line, method=method, path=http_path)
                if "request" in event:
                    action.json_body = copy.deepcopy(event["request"])
                    action.has_body = True
                elif "request_raw" in event:
                    action.raw_body = event["request_raw"]
                    action.has_body = True
                actions.append(action)

    actions.sort(key=lambda a: (a.t, a.line))
    _set_anchors(events, actions)

    preamble: list[Action] = []
    for prompt_id, found in entries.items():
        if prompt_id in posted_ids:
            continue
        entry = found[0][1]
        extra = dict(entry[3] or {})
        cid = extra.pop("client_id", None)
        preamble.append(Action(
            t=0.0, kind="post_prompt", line=events[found[0][0]]["_line"], method="POST", path="/prompt",
            graph=copy.deepcopy(entry[2]), prompt_id=prompt_id,
            caller_prompt_id=None if is_uuid(prompt_id) else prompt_id,
            client_id=cid, extra_data=extra or None,
            source="preamble: the recorded server already held this prompt",
        ))
    preamble.sort(key=lambda a: next(e[0] for i, e in entries[a.prompt_id]))  # by recorded number
    return Trace(name=name, path=path, events=events, actions=actions, preamble=preamble, client_ids=labels)


def _set_anchors(events: list[dict[str, Any]], actions: list[Action]) -> None:
    """Give each action the frame the recorder was reacting to, if any: the last end-of-prompt frame recorded
    between the previous action and this one, or a ``progress`` frame recorded at most ``REACTION`` seconds
    before it (the recorder interrupted, killed, or dropped its socket as soon as step N was reported)."""
    counts: dict[tuple[str, str], int] = {}
    candidates: list[Anchor] = []
    for event in events:
        if event.get("kind") != "ws":
            continue
        key = frame_key(event.get("frame", {}))
        label = event["client"]
        occurrence = counts.get((label, key), 0)
        counts[(label, key)] = occurrence + 1
        if key in TERMINAL_KEYS or key == "progress":
            candidates.append(Anchor(client=label, key=key, occurrence=occurrence, t=float(event["t"])))
    previous = float("-inf")
    for action in actions:
        window = [
            a for a in candidates
            if previous <= a.t <= action.t and (a.key in TERMINAL_KEYS or action.t - a.t <= REACTION)
        ]
        if window:
            action.anchor = max(window, key=lambda a: a.t)
        previous = action.t


def trace_files(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("*.jsonl"))


def known_prompt_ids(events: list[dict[str, Any]]) -> set[str]:
    """Every prompt id a recording mentions: POST /prompt answers and the ``prompt_id`` of frames."""
    ids: set[str] = set()
    for event in events:
        if event.get("kind") == "http" and event.get("method") == "POST" and event.get("path") == "/prompt":
            body = event.get("body")
            if isinstance(body, dict) and isinstance(body.get("prompt_id"), str):
                ids.add(body["prompt_id"])
        elif event.get("kind") == "ws":
            data = event.get("frame", {}).get("data")
            if isinstance(data, dict) and isinstance(data.get("prompt_id"), str):
                ids.add(data["prompt_id"])
    return ids


if __name__ == "__main__":  # python -m tests.fidelity.trace TRACE.jsonl: print the actions
    import sys

    for trace_path in sys.argv[1:]:
        loaded = load_trace(trace_path)
        print(f"== {loaded.name} ({loaded.duration:.1f} s)")
        for act in loaded.preamble:
            print("   pre ", act.describe())
        for act in loaded.actions:
            anchor = f"  after {act.anchor.client}:{act.anchor.key}#{act.anchor.occurrence}@{act.anchor.t}" if act.anchor else ""
            print("   ", act.describe() + anchor)
