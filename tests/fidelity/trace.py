"""A recording of a real ComfyUI 0.3.64 server (loaded by testkit.recordings) as timed replay actions and
expected observations.

A recording holds what a client saw: websocket frames, HTTP exchanges, and notes on what the recorder did.
``trace_of`` turns it into:

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
import re
from dataclasses import dataclass, field
from typing import Any

from testkit.recordings import TERMINAL_TYPES, Recording, posted_prompt_id, prompt_of

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Frames after which the recorder acted (it waited for the end of a prompt, then slept).  The replay waits
# for the same frame (the same occurrence on the same socket) before it runs the actions that followed it.
TERMINAL_KEYS = (*TERMINAL_TYPES, "executing:null")
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
    """A recording as the replay's actions."""
    recording: Recording
    actions: list[Action]
    # Prompts the recorded server already held before the scenario (history entries the scenario read but
    # never posted): the replay posts these first, so the fresh server holds the same kind of state.
    preamble: list[Action] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.recording.name

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.recording.events

    @property
    def client_ids(self) -> dict[str, str]:
        """Socket label -> recorded client id."""
        return self.recording.labels

    @property
    def duration(self) -> float:
        return self.recording.duration


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


def _post_client(events: list[dict[str, Any]], prompt_id: str | None) -> str | None:
    """The label of the socket that received the prompt's execution_start (its submitting client)."""
    if prompt_id is None:
        return None
    for event in events:
        if event.get("kind") == "ws":
            frame = event.get("frame", {})
            if frame.get("type") == "execution_start" and prompt_of(frame) == prompt_id:
                return event.get("client")
    return None


def _note_time(events: list[dict[str, Any]], after: int, text: str) -> float | None:
    """When the first note saying `text` after event `after` was recorded."""
    return next((float(e["t"]) for e in events[after + 1:] if e.get("kind") == "note" and e.get("text") == text),
                None)


class _Planner:
    """Turns a recording's events, one by one, into the actions that replay it."""

    def __init__(self, recording: Recording):
        self.recording = recording
        self.events = recording.events
        self.labels = recording.labels
        self.first_label = next(iter(self.labels), None)
        self.items = recording.prompt_items()
        self.actions: list[Action] = []
        self.posted_ids: set[str] = set()
        self.fallback_runs = 0
        self.closed: set[str] = set()

    def plan(self) -> Trace:
        for index, event in enumerate(self.events):
            self._event(index, event)
        self.actions.sort(key=lambda a: (a.t, a.line))
        _set_anchors(self.events, self.actions)
        return Trace(self.recording, self.actions, self._preamble())

    def _event(self, index: int, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        t = float(event.get("t", 0.0))
        line = event["_line"]
        if kind == "ws_open":
            self.actions.append(Action(t=t, kind="ws_open", line=line, client=event["client"],
                                       client_id=event["client_id"]))
        elif kind == "ws_sent":
            self.actions.append(Action(t=t, kind="ws_send", line=line, client=event["client"], frame=event["frame"]))
        elif kind in ("ws_close", "ws_closed_by_client"):
            self._close(event["client"], t, line)
        elif kind == "note":
            self._note(index, str(event.get("text", "")), t, line)
        elif kind == "http":
            self._http(index, event, t - float(event.get("elapsed") or 0.0), line)

    def _close(self, label: str, t: float, line: int) -> None:
        """The client closed its socket if the recording says so for this label; the close frame the server
        echoed may be logged just before that. The action starts at the earlier of the two."""
        said_by_client = any(e.get("kind") == "ws_closed_by_client" and e.get("client") == label for e in self.events)
        if said_by_client and label not in self.closed:
            self.closed.add(label)
            self.actions.append(Action(t=t, kind="ws_close", line=line, client=label))

    def _note(self, index: int, text: str, t: float, line: int) -> None:
        match = re.match(r"kill -(SIG[A-Z]+)", text)
        if match:
            self.actions.append(Action(t=t, kind="kill", line=line, signal=match.group(1), text=text,
                                       done_t=_note_time(self.events, index, "server process exited")))
        elif text == "HTTP after kill":
            self.actions.append(Action(t=t, kind="probe_http", line=line, text=text, method="GET", path="/queue"))
        elif text == "ws reconnect after kill":
            self.actions.append(Action(t=t, kind="probe_ws", line=line, text=text, client=self.first_label,
                                       client_id=self.labels.get(self.first_label or "")))
        elif text.startswith("restarting server"):
            self.actions.append(Action(t=t, kind="restart", line=line, text=text,
                                       done_t=_note_time(self.events, index, "start.sh")))

    def _http(self, index: int, event: dict[str, Any], start: float, line: int) -> None:
        method, path = event["method"], event["path"]
        if method == "POST" and path == "/prompt" and "request" not in event and "request_raw" not in event:
            self.actions.append(self._post_prompt(index, event, start, line))
            return
        action = Action(t=start, kind="http", line=line, method=method, path=path)
        if "request" in event:
            action.json_body = copy.deepcopy(event["request"])
            action.has_body = True
        elif "request_raw" in event:
            action.raw_body = event["request_raw"]
            action.has_body = True
        self.actions.append(action)

    def _post_prompt(self, index: int, event: dict[str, Any], start: float, line: int) -> Action:
        action = Action(t=start, kind="post_prompt", line=line, method="POST", path="/prompt")
        recorded_id = posted_prompt_id(event) if event.get("status") == 200 else None
        action.prompt_id = recorded_id
        item = self._item_after(recorded_id, index)
        named = self.recording.named_workflow(index)
        if item is not None:
            self._graph_from_item(action, item)
        elif named is not None:
            file_name, action.graph = named
            action.client = self.first_label
            action.client_id = self.labels.get(self.first_label or "")
            action.source = f"workflows/{file_name} (named by the preceding note)"
        elif self.recording.name in FALLBACK_WORKFLOWS:
            self._fallback_graph(action, recorded_id)
        else:
            raise ValueError(f"{self.recording.path.name}:{line}: cannot recover the graph of POST /prompt "
                             f"{recorded_id}")
        if recorded_id is not None and not is_uuid(recorded_id):
            action.caller_prompt_id = recorded_id
        if recorded_id is not None:
            self.posted_ids.add(recorded_id)
        return action

    def _item_after(self, prompt_id: str | None, index: int) -> list[Any] | None:
        """The first item held for the prompt after this POST (a reused caller id is overwritten later)."""
        if prompt_id is None:
            return None
        candidates = self.items.get(prompt_id, [])
        later = [item for i, item in candidates if i > index]
        return (later or [item for _, item in candidates] or [None])[0]

    def _graph_from_item(self, action: Action, item: list[Any]) -> None:
        number, _, graph, extra = item[0], item[1], item[2], item[3]
        action.graph = copy.deepcopy(graph)
        action.front = number < 0
        extra = dict(extra or {})
        cid = extra.pop("client_id", None)
        action.client_id = cid
        action.client = next((label for label, c in self.labels.items() if c == cid), None)
        action.extra_data = extra or None
        action.source = "graph from a /history or /queue body of this trace"

    def _fallback_graph(self, action: Action, recorded_id: str | None) -> None:
        file_name, overrides = FALLBACK_WORKFLOWS[self.recording.name]
        graph = _apply_overrides(self.recording.workflow(file_name), overrides)
        action.graph = vary_graph(graph, self.fallback_runs)
        self.fallback_runs += 1
        label = _post_client(self.events, recorded_id) or self.first_label
        action.client = label
        action.client_id = self.labels.get(label or "")
        action.source = (f"FALLBACK workflows/{file_name} {overrides or ''} run {self.fallback_runs}: "
                         "not recoverable from the trace")

    def _preamble(self) -> list[Action]:
        preamble = [self._held_before(prompt_id, found) for prompt_id, found in self.items.items()
                    if prompt_id not in self.posted_ids]
        preamble.sort(key=lambda a: self.items[a.prompt_id][0][1][0])  # by recorded number
        return preamble

    def _held_before(self, prompt_id: str, found: list[tuple[int, list[Any]]]) -> Action:
        index, item = found[0]
        extra = dict(item[3] or {})
        cid = extra.pop("client_id", None)
        return Action(t=0.0, kind="post_prompt", line=self.events[index]["_line"], method="POST", path="/prompt",
                      graph=copy.deepcopy(item[2]), prompt_id=prompt_id,
                      caller_prompt_id=None if is_uuid(prompt_id) else prompt_id, client_id=cid,
                      extra_data=extra or None, source="preamble: the recorded server already held this prompt")


def trace_of(recording: Recording) -> Trace:
    return _Planner(recording).plan()


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


def known_prompt_ids(events: list[dict[str, Any]]) -> set[str]:
    """Every prompt id a recording mentions: POST /prompt answers and the ``prompt_id`` of frames."""
    named = [posted_prompt_id(event) if event.get("kind") == "http" else prompt_of(event.get("frame", {}))
             for event in events if event.get("kind") in ("http", "ws")]
    return {prompt_id for prompt_id in named if isinstance(prompt_id, str)}


if __name__ == "__main__":  # python -m tests.fidelity.trace TRACE.jsonl: print the actions
    import sys

    from testkit.recordings import load_recording

    for trace_path in sys.argv[1:]:
        loaded = trace_of(load_recording(trace_path))
        print(f"== {loaded.name} ({loaded.duration:.1f} s)")
        for act in loaded.preamble:
            print("   pre ", act.describe())
        for act in loaded.actions:
            anchor = f"  after {act.anchor.client}:{act.anchor.key}#{act.anchor.occurrence}@{act.anchor.t}" if act.anchor else ""
            print("   ", act.describe() + anchor)
