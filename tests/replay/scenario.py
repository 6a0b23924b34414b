"""A recording (loaded by testkit.recordings) as the replay server's timeline: what to send, when, to whom.

- The greeting of each recorded websocket connection: what ComfyUI sent by itself on connect (the ``status``
  frame with ``sid``; on a reconnect during a run, the ``executing`` without ``prompt_id``; a
  ``feature_flags`` answer).
- Every recorded ``POST`` (``/prompt``, ``/interrupt``, ``/queue``), with its answer; each accepted
  ``POST /prompt`` is a run, with the history entry the recorder later read for it.
- The steps in recorded order: frames, binary frames, POSTs as gates, connections, drops (a ``ws_close`` whose
  client id connects again later), and for each run the step from which it runs and the step before which its
  history is written (the ``status`` frame after its end).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from testkit.recordings import TERMINAL_TYPES, Recording, prompt_of


@dataclass
class Connection:
    """One recorded ws_open: which recorded client id, and the greeting frames it got at once."""
    label: str
    client_id: str
    greeting: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    """One accepted POST /prompt of the recording."""
    index: int  # among all recorded POSTs
    prompt_id: str  # as recorded
    number: Any
    history: dict[str, Any] | None  # the recorded history entry (value under the prompt id), if it was fetched
    client_id: str | None  # the recorded client id it was posted with (from the history's extra_data)
    outputs: list[str] = field(default_factory=list)  # file names named by its executed frames / history


@dataclass
class Step:
    t: float
    kind: str  # frame, binary, gate, drop, connect, end (only marks history written at the end)
    label: str = ""
    frame: dict[str, Any] | None = None
    binary: dict[str, Any] | None = None
    gate: int = -1  # index among recorded POSTs
    client_id: str = ""  # connect / drop: recorded client id
    connection: int = 0  # connect: 1-based connection number of that client id
    starts: list[int] = field(default_factory=list)  # runs that are running from this step on
    writes_history: list[int] = field(default_factory=list)  # runs whose history is written before this step


@dataclass
class Post:
    index: int
    path: str
    status: int
    body: Any
    run: int | None  # index into Scenario.runs for an accepted /prompt


@dataclass
class Scenario:
    name: str
    client_ids: list[str]  # recorded, in order of first ws_open
    connections: dict[str, list[Connection]]  # recorded client id -> its ws_opens in order
    posts: list[Post]
    runs: list[Run]
    steps: list[Step]

    def graph(self, run: int) -> dict[str, Any]:
        """The graph that was posted (from the recorded history's ``prompt`` item)."""
        history = self.runs[run].history
        assert history is not None, f"{self.name}: no recorded history holds the graph of run {run}"
        return copy.deepcopy(history["prompt"][2])

    def executed_images(self, run: int) -> list[tuple[str, str, str, str]]:
        """(node, filename, subfolder, type) from the recorded ``executed`` frames of one run, in order."""
        found = []
        for step in self.steps:
            if step.kind != "frame" or step.frame.get("type") != "executed":
                continue
            data = step.frame["data"]
            if data.get("prompt_id") == self.runs[run].prompt_id and self._run_of_step(step) == run:
                for image in (data.get("output") or {}).get("images") or []:
                    found.append((str(data["node"]), image["filename"], image.get("subfolder", ""),
                                  image.get("type", "output")))
        return found

    def _run_of_step(self, step: Step) -> int | None:
        index = self.steps.index(step)
        prompt_id = step.frame["data"].get("prompt_id")
        latest = None
        for earlier in self.steps[:index]:
            if earlier.kind == "gate":
                post = self.posts[earlier.gate]
                if post.run is not None and self.runs[post.run].prompt_id == prompt_id:
                    latest = post.run
        return latest


def scenario_of(recording: Recording) -> Scenario:
    connections, greeting_lines = _connections(recording)
    posts, runs = _posts_and_runs(recording)
    steps = _timeline(recording, greeting_lines)
    for run_index, run in enumerate(runs):
        _place_run(steps, posts, runs, run_index, run)
    return Scenario(recording.name, list(connections), connections, posts, runs, steps)


def _is_greeting(frame: dict[str, Any]) -> bool:
    """What ComfyUI's websocket handler sends by itself on connect."""
    data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
    kind = frame.get("type")
    if kind == "status":
        return "sid" in data
    if kind == "executing":
        return "prompt_id" not in data
    return kind == "feature_flags"


def _connections(recording: Recording) -> tuple[dict[str, list[Connection]], set[int]]:
    """Recorded client id -> its connections with their greetings; and the event indexes of greeting frames."""
    events = recording.events
    connections: dict[str, list[Connection]] = {}
    greeting_lines: set[int] = set()
    for i, event in enumerate(events):
        if event["kind"] != "ws_open":
            continue
        connection = Connection(event["client"], event["client_id"])
        connections.setdefault(connection.client_id, []).append(connection)
        for j in range(i + 1, len(events)):
            later = events[j]
            if later.get("client") != connection.label:
                continue
            if later["kind"] == "ws":
                if not _is_greeting(later["frame"]):
                    break
                connection.greeting.append(later["frame"])
                greeting_lines.add(j)
            elif later["kind"] in ("ws_binary", "ws_close", "ws_closed_by_client", "ws_error"):
                break
    return connections, greeting_lines


def _posts_and_runs(recording: Recording) -> tuple[list[Post], list[Run]]:
    """Every POST, and the runs of accepted prompts with the history the recorder read for each."""
    posts: list[Post] = []
    runs: list[Run] = []
    for at, event in recording.posts():
        path_only = event["path"].split("?")[0]
        body = event.get("body")
        run_index = None
        if path_only == "/prompt" and event["status"] == 200 and isinstance(body, dict) and "prompt_id" in body:
            run_index = len(runs)
            runs.append(_run(recording, len(posts), at, body))
        posts.append(Post(len(posts), path_only, event["status"], body, run_index))
    return posts, runs


def _run(recording: Recording, index: int, at: int, answer: dict[str, Any]) -> Run:
    """The run of the `index`-th POST (event `at`), which ComfyUI accepted with `answer`."""
    run = Run(index, answer["prompt_id"], answer.get("number"), None, None)
    entry = recording.history_entry(run.prompt_id, after=at)
    if entry:
        run.history = entry
        extra = entry["prompt"][3] if isinstance(entry.get("prompt"), list) else {}
        run.client_id = extra.get("client_id") if isinstance(extra, dict) else None
        for output in (entry.get("outputs") or {}).values():
            for image in (output or {}).get("images") or []:
                run.outputs.append(image["filename"])
    return run


def _timeline(recording: Recording, greeting_lines: set[int]) -> list[Step]:
    events = recording.events
    steps: list[Step] = []
    seen_connections: dict[str, int] = {}
    post_counter = 0
    for i, event in enumerate(events):
        kind = event["kind"]
        if kind == "ws_close":
            client_id = recording.labels.get(event["client"])
            if any(e["kind"] == "ws_open" and e["client_id"] == client_id for e in events[i + 1:]):
                steps.append(Step(event["t"], "drop", label=event["client"], client_id=client_id))
        elif kind == "ws_open":
            seen_connections[event["client_id"]] = seen_connections.get(event["client_id"], 0) + 1
            steps.append(Step(event["t"], "connect", label=event["client"], client_id=event["client_id"],
                              connection=seen_connections[event["client_id"]]))
        elif kind == "ws" and i not in greeting_lines:
            steps.append(Step(event["t"], "frame", label=event["client"], frame=event["frame"]))
        elif kind == "ws_binary":
            steps.append(Step(event["t"], "binary", label=event["client"], binary=event))
        elif kind == "http" and event["method"] == "POST":
            steps.append(Step(event["t"], "gate", gate=post_counter))
            post_counter += 1
    return steps


def _place_run(steps: list[Step], posts: list[Post], runs: list[Run], run_index: int, run: Run) -> None:
    """Marks when the run starts (its first frame) and when its history is written (the status frame after its
    end); adds the file names its executed frames name."""
    gate_at = next(k for k, s in enumerate(steps) if s.kind == "gate" and s.gate == run.index)
    end_at = len(steps)
    for k in range(gate_at + 1, len(steps)):
        s = steps[k]
        again = s.kind == "gate" and posts[s.gate].run is not None
        if again and runs[posts[s.gate].run].prompt_id == run.prompt_id:
            end_at = k
            break
    mine = [k for k in range(gate_at + 1, end_at)
            if steps[k].kind == "frame" and prompt_of(steps[k].frame) == run.prompt_id]
    if mine:
        steps[mine[0]].starts.append(run_index)
    terminal = next((k for k in mine if steps[k].frame.get("type") in TERMINAL_TYPES), None)
    after = terminal if terminal is not None else (mine[-1] if mine else gate_at)
    written = next((k for k in range(after + 1, len(steps))
                    if steps[k].kind == "frame" and steps[k].frame.get("type") == "status"), None)
    if written is None:
        steps.append(Step(steps[-1].t, "end"))
        written = len(steps) - 1
    steps[written].writes_history.append(run_index)
    for k in mine:
        if steps[k].frame.get("type") == "executed":
            for image in (steps[k].frame["data"].get("output") or {}).get("images") or []:
                if image["filename"] not in run.outputs:
                    run.outputs.append(image["filename"])
