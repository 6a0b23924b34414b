"""A server that plays one recording of a real ComfyUI 0.3.64 back to a client, as that server did.

A recording (``tests/data/comfyui-traces/*.jsonl``) holds what the recorder's sockets received and its HTTP
exchanges.  ``load_scenario`` turns it into a timeline; ``ReplayServer`` serves it on 127.0.0.1 (aiohttp, in a
thread with its own event loop):

- websocket ``/ws?clientId=X``: the n-th distinct client id that connects stands for the n-th client id of the
  recording.  Each connection first gets the greeting recorded after the matching ``ws_open`` (the ``status``
  frame with ``sid``; on a reconnect during a run, the ``executing`` without ``prompt_id``; a ``feature_flags``
  answer), ids rewritten.
- every recorded ``POST`` (``/prompt``, ``/interrupt``, ``/queue``) is a gate: the timeline waits there until the
  client makes its next POST, which is answered with the recorded status and body (for ``/prompt``, the
  client's ``prompt_id`` substituted for the recorded one).  Then the frames recorded up to the next POST are
  pushed, in recorded order and with recorded gaps (a gap longer than ``max_gap`` is cut to ``max_gap``), each to
  the current socket of the client id it was recorded on: frames of other prompts and other clients too (a
  prompt posted without a client id leaks its ``progress`` to every socket).  A frame for a client with no open
  socket is lost, as on the real server.
- binary frames are recorded as length and header only: each is rebuilt with the recorded header (event type,
  image format; for type 4 the metadata of the prompt and node running on that socket) and a real small image.
- a ``ws_close`` that the same client id reopens later (``reconnect_mid_run``) becomes a drop: the server aborts
  the TCP connection without a close frame, and the timeline waits (briefly) for the reconnect.
- ``GET /history/{id}`` answers ``{}`` until the prompt's history is written, then the recorded body (ids mapped).
  Like ComfyUI (``task_done`` runs after ``execution_success`` and before ``executing null``, and broadcasts
  ``status``), the history is written, and the prompt leaves ``queue_running``, at the ``status`` frame that
  follows the prompt's ``execution_success`` / ``execution_error`` / ``execution_interrupted``;
  ``history_delay`` holds that moment back to widen the race window.  A re-posted prompt id keeps its older
  entry until the new run's is written (ComfyUI's history is a dict by prompt id; not recorded, inferred).
- ``GET /queue``: the prompts posted and not finished, as ``[number, prompt_id, graph, extra_data, outputs]``
  items taken from the recorded history bodies (the shape recorded in ``queue_and_delete``).
- ``GET /view``: a real small PNG for every output file name the recording mentions, 404 otherwise.

Anything the replay cannot honour (an unexpected request, a POST at the wrong path, a client id or prompt that
does not match the recording) is appended to ``errors``; the fixture fails the test on them.
"""
from __future__ import annotations

import asyncio
import copy
import io
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

TERMINAL_TYPES = ("execution_success", "execution_error", "execution_interrupted")
GATE_PATHS = ("/prompt", "/interrupt", "/queue")


# --------------------------------------------------------------------------------------------------- images

def png_bytes(seed: str, size: tuple[int, int] = (8, 8)) -> bytes:
    colour = tuple(uuid.uuid5(uuid.NAMESPACE_URL, seed).bytes[:3])
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(seed: str, size: tuple[int, int] = (8, 8)) -> bytes:
    colour = tuple(uuid.uuid5(uuid.NAMESPACE_URL, seed).bytes[:3])
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ the trace

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
    events: list[dict[str, Any]]
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


def _is_greeting(frame: dict[str, Any]) -> bool:
    """What ComfyUI's websocket handler sends by itself on connect."""
    data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
    kind = frame.get("type")
    if kind == "status":
        return "sid" in data
    if kind == "executing":
        return "prompt_id" not in data
    return kind == "feature_flags"


def _prompt_of(frame: dict[str, Any]) -> str | None:
    data = frame.get("data")
    return data.get("prompt_id") if isinstance(data, dict) else None


def load_scenario(path: Path) -> Scenario:
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    labels: dict[str, str] = {}
    client_ids: list[str] = []
    connections: dict[str, list[Connection]] = {}
    greeting_lines: set[int] = set()

    for i, event in enumerate(events):
        if event["kind"] != "ws_open":
            continue
        label, client_id = event["client"], event["client_id"]
        labels[label] = client_id
        if client_id not in connections:
            client_ids.append(client_id)
            connections[client_id] = []
        connection = Connection(label, client_id)
        connections[client_id].append(connection)
        for j in range(i + 1, len(events)):
            later = events[j]
            if later.get("client") != label:
                continue
            if later["kind"] == "ws":
                if not _is_greeting(later["frame"]):
                    break
                connection.greeting.append(later["frame"])
                greeting_lines.add(j)
            elif later["kind"] in ("ws_binary", "ws_close", "ws_closed_by_client", "ws_error"):
                break

    # POSTs, and the runs of accepted prompts with their recorded history
    posts: list[Post] = []
    runs: list[Run] = []
    for i, event in enumerate(events):
        if event["kind"] == "http" and event["method"] == "POST":
            path_only = event["path"].split("?")[0]
            run_index = None
            body = event.get("body")
            if path_only == "/prompt" and event["status"] == 200 and isinstance(body, dict) and "prompt_id" in body:
                run_index = len(runs)
                runs.append(Run(len(posts), body["prompt_id"], body.get("number"), None, None))
            posts.append(Post(len(posts), path_only, event["status"], body, run_index))

    # each run's history: the first non-empty /history answer for its prompt id after its POST (and before the
    # same id is posted again)
    post_lines = [i for i, e in enumerate(events) if e["kind"] == "http" and e["method"] == "POST"]
    for run in runs:
        start = post_lines[run.index]
        for event in events[start + 1:]:
            if event["kind"] == "http" and event["method"] == "POST" and event["path"] == "/prompt" \
                    and isinstance(event.get("body"), dict) and event["body"].get("prompt_id") == run.prompt_id:
                break
            if event["kind"] == "http" and event["method"] == "GET" \
                    and event["path"].split("?")[0] == f"/history/{run.prompt_id}":
                entry = (event.get("body") or {}).get(run.prompt_id)
                if entry:
                    run.history = entry
                    extra = entry["prompt"][3] if isinstance(entry.get("prompt"), list) else {}
                    run.client_id = extra.get("client_id") if isinstance(extra, dict) else None
                    for output in (entry.get("outputs") or {}).values():
                        for image in (output or {}).get("images") or []:
                            run.outputs.append(image["filename"])
                    break

    # the timeline
    steps: list[Step] = []
    seen_connections: dict[str, int] = {}
    post_counter = 0
    for i, event in enumerate(events):
        kind = event["kind"]
        if kind == "ws_close":
            client_id = labels.get(event["client"])
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

    # when each run starts (its first frame) and when its history is written (the status frame after its end)
    for run_index, run in enumerate(runs):
        gate_at = next(k for k, s in enumerate(steps) if s.kind == "gate" and s.gate == run.index)
        end_at = len(steps)
        for k in range(gate_at + 1, len(steps)):
            s = steps[k]
            again = s.kind == "gate" and posts[s.gate].run is not None
            if again and runs[posts[s.gate].run].prompt_id == run.prompt_id:
                end_at = k
                break
        mine = [k for k in range(gate_at + 1, end_at)
                if steps[k].kind == "frame" and _prompt_of(steps[k].frame) == run.prompt_id]
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

    return Scenario(path.stem, events, client_ids, connections, posts, runs, steps)


# ----------------------------------------------------------------------------------------------- the server

@dataclass
class Served:
    """One HTTP request the replay answered (for assertions)."""
    at: float  # time.monotonic()
    method: str
    path: str
    query: dict[str, str]
    status: int
    body: Any


class ReplayServer:
    def __init__(self, scenario: Scenario, *, max_gap: float = 0.1, history_delay: float = 0.0,
                 wait_timeout: float = 15.0):
        self.scenario = scenario
        self.max_gap = max_gap
        self.history_delay = history_delay
        self.wait_timeout = wait_timeout
        self.errors: list[str] = []
        self.served: list[Served] = []
        self.received_frames: list[tuple[str, Any]] = []  # (client id, message) sent by clients
        self.sent: list[tuple[float, str, Any]] = []  # (time, client id, frame dict or bytes) pushed to sockets
        self.lost: list[tuple[str, Any]] = []  # frames for a client with no open socket
        self.previews: list[bytes] = []  # image bytes of the binary frames sent
        self.milestones: dict[str, float] = {}  # e.g. "history_written:<pid>", "terminal:<pid>" -> monotonic
        self.finished = threading.Event()
        # id maps, recorded -> ours
        self.prompt_map: dict[str, str] = {}
        self.client_map: dict[str, str] = {}
        self._ours_to_recorded_client: dict[str, str] = {}
        # state
        self._posts_received: list[dict[str, Any]] = []
        self._state: dict[int, str] = {}  # run -> pending, running, done
        self._history_written: set[int] = set()
        self._sockets: dict[str, web.WebSocketResponse] = {}  # recorded client id -> open socket
        self._requests: dict[web.WebSocketResponse, web.Request] = {}
        self._connection_count: dict[str, int] = {}
        self._running_node: dict[str, tuple[str, str]] = {}  # label -> (recorded prompt id, node) of the last executing
        self._images: dict[str, bytes] = {name: png_bytes(name) for run in scenario.runs for name in run.outputs}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._player: asyncio.Task | None = None
        self._changed: asyncio.Condition | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ReplayServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready), name=f"replay-{self.scenario.name}",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the replay server did not start")
        return self

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def setup() -> None:
            self._changed = asyncio.Condition()
            app = web.Application()
            app.router.add_get("/ws", self._ws)
            app.router.add_post("/prompt", self._post)
            app.router.add_post("/interrupt", self._post)
            app.router.add_post("/queue", self._post)
            app.router.add_get("/prompt", self._get_prompt)
            app.router.add_get("/queue", self._get_queue)
            app.router.add_get("/history/{prompt_id}", self._get_history)
            app.router.add_get("/view", self._get_view)
            app.router.add_route("*", "/{tail:.*}", self._unexpected)
            self._runner = web.AppRunner(app, handle_signals=False)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
            self._player = asyncio.ensure_future(self._play())

        loop.run_until_complete(setup())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def teardown() -> None:
            if self._player is not None:
                self._player.cancel()
            for ws in list(self._sockets.values()):
                transport = self._requests.get(ws).transport if ws in self._requests else None
                if transport is not None:
                    transport.abort()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(teardown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    def wait_finished(self, timeout: float = 30.0) -> None:
        assert self.finished.wait(timeout), f"{self.scenario.name}: the replay did not reach the end"

    # ------------------------------------------------------------------ id mapping
    def _map(self, value: Any) -> Any:
        text = json.dumps(value)
        for recorded, ours in list(self.prompt_map.items()) + list(self.client_map.items()):
            text = text.replace(json.dumps(recorded)[1:-1], json.dumps(ours)[1:-1])
        return json.loads(text)

    def pid(self, recorded_prompt_id: str) -> str:
        return self.prompt_map[recorded_prompt_id]

    def history_body(self, run: int) -> dict[str, Any]:
        """What /history/{id} answers once the run's history is written (ours ids)."""
        entry = self.scenario.runs[run].history
        return self._map({self.scenario.runs[run].prompt_id: entry}) if entry else {}

    def image(self, filename: str) -> bytes:
        return self._images[filename]

    def posts(self, path: str) -> list[Any]:
        """The bodies of the POSTs the client made to path, in order."""
        return [p["body"] for p in self._posts_received if p["path"] == path]

    @property
    def connections(self) -> dict[str, int]:
        """Our client id -> how many websocket connections it opened."""
        return {self.client_map[c]: n for c, n in self._connection_count.items()}

    def history_answers(self, prompt_id: str) -> list[Served]:
        return [s for s in self.served if s.method == "GET" and s.path == f"/history/{prompt_id}"]

    # ------------------------------------------------------------------ websocket
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ours = request.query.get("clientId", "")
        recorded = self._ours_to_recorded_client.get(ours)
        if recorded is None:
            unmapped = [c for c in self.scenario.client_ids if c not in self.client_map]
            if not unmapped:
                self.errors.append(f"websocket from unexpected client id {ours!r}")
                return web.Response(status=400, text="unexpected client id")
            recorded = unmapped[0]
            self.client_map[recorded] = ours
            self._ours_to_recorded_client[ours] = recorded
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._requests[ws] = request
        self._sockets[recorded] = ws
        count = self._connection_count[recorded] = self._connection_count.get(recorded, 0) + 1
        recorded_connections = self.scenario.connections[recorded]
        if count <= len(recorded_connections):
            greeting = recorded_connections[count - 1].greeting
        else:  # more connections than recorded: only the status frame, as ComfyUI sends to any new socket
            greeting = [f for f in recorded_connections[-1].greeting if f.get("type") == "status"]
        for frame in greeting:
            await self._send(recorded, frame)
        async with self._changed:
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    try:
                        self.received_frames.append((ours, json.loads(message.data)))
                    except ValueError:
                        self.received_frames.append((ours, message.data))
        except Exception:  # noqa: BLE001 - a dropped socket ends the handler however aiohttp reports it
            pass
        finally:
            if self._sockets.get(recorded) is ws:
                del self._sockets[recorded]
            self._requests.pop(ws, None)
        return ws

    async def _send(self, recorded_client: str, frame: dict[str, Any] | bytes) -> None:
        ws = self._sockets.get(recorded_client)
        payload = frame if isinstance(frame, bytes) else self._map(frame)
        if ws is None or ws.closed:
            self.lost.append((recorded_client, payload))
            return
        try:
            if isinstance(payload, bytes):
                await ws.send_bytes(payload)
            else:
                await ws.send_str(json.dumps(payload))
            self.sent.append((time.monotonic(), self.client_map.get(recorded_client, ""), payload))
        except (ConnectionError, RuntimeError):
            self.lost.append((recorded_client, payload))

    # ------------------------------------------------------------------ the timeline
    async def _wait_for(self, predicate) -> bool:
        deadline = self._loop.time() + self.wait_timeout
        async with self._changed:
            while not predicate():
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        return True

    async def _play(self) -> None:
        scenario = self.scenario
        previous_t: float | None = None
        for step in scenario.steps:
            if step.kind == "gate":
                # wait for the client's POST (no timeout: a test may stop before the end of the recording)
                async with self._changed:
                    await self._changed.wait_for(lambda: len(self._posts_received) > step.gate)
                previous_t = step.t
                continue
            if step.kind == "connect":
                ok = await self._wait_for(lambda: self._connection_count.get(step.client_id, 0) >= step.connection)
                if not ok:
                    self.errors.append(f"no websocket connection {step.connection} for recorded client "
                                       f"{step.label} within {self.wait_timeout}s")
                previous_t = step.t
                continue
            if previous_t is not None:
                gap = step.t - previous_t
                if gap > 0:
                    await asyncio.sleep(min(gap, self.max_gap))
            previous_t = step.t
            if step.writes_history:
                if self.history_delay:
                    await asyncio.sleep(self.history_delay)
                for run in step.writes_history:
                    self._history_written.add(run)
                    self._state[run] = "done"
                    pid = self.prompt_map.get(scenario.runs[run].prompt_id)
                    self.milestones[f"history_written:{pid}"] = time.monotonic()
            for run in step.starts:
                if self._state.get(run) == "pending":
                    self._state[run] = "running"
            if step.kind == "frame":
                frame = step.frame
                if frame.get("type") == "executing" and _prompt_of(frame) and frame["data"].get("node") is not None:
                    self._running_node[step.label] = (_prompt_of(frame), str(frame["data"]["node"]))
                if frame.get("type") in TERMINAL_TYPES:
                    self.milestones[f"terminal:{self.prompt_map.get(_prompt_of(frame))}"] = time.monotonic()
                await self._send(self._client_of(step.label), frame)
            elif step.kind == "binary":
                await self._send(self._client_of(step.label), self._binary(step))
            elif step.kind == "drop":
                ws = self._sockets.get(step.client_id)
                if ws is not None:
                    self.milestones[f"drop:{self.client_map.get(step.client_id)}"] = time.monotonic()
                    request = self._requests.get(ws)
                    del self._sockets[step.client_id]
                    if request is not None and request.transport is not None:
                        request.transport.abort()  # like a lost network: no close frame
        self.finished.set()

    def _client_of(self, label: str) -> str:
        for client_id, connections in self.scenario.connections.items():
            if any(c.label == label for c in connections):
                return client_id
        raise KeyError(label)

    def _binary(self, step: Step) -> bytes:
        recorded = step.binary
        event_type = int(recorded.get("event_type", int(recorded["head_hex"][:8], 16)))
        word = int(recorded.get("image_format", int(recorded["head_hex"][8:16], 16)))
        if event_type == 4:
            prompt_id, node = self._running_node.get(step.label, (None, None))
            metadata = {"node_id": node, "prompt_id": prompt_id, "display_node_id": node, "parent_node_id": None,
                        "real_node_id": node, "image_type": "image/png"}
            if len(json.dumps(metadata)) != word:
                self.errors.append(f"type 4 preview at t={step.t}: rebuilt metadata is {len(json.dumps(metadata))} "
                                   f"bytes, recorded {word}")
            image = png_bytes(f"preview-{len(self.previews)}")
            meta = json.dumps(self._map(metadata)).encode()
            self.previews.append(image)
            return struct.pack(">II", 4, len(meta)) + meta + image
        image = jpeg_bytes(f"preview-{len(self.previews)}") if word == 1 else png_bytes(f"preview-{len(self.previews)}")
        self.previews.append(image)
        return struct.pack(">II", event_type, word) + image

    # ------------------------------------------------------------------ HTTP
    def _serve_record(self, request: web.Request, status: int, body: Any) -> None:
        self.served.append(Served(time.monotonic(), request.method, request.path, dict(request.query), status, body))

    async def _post(self, request: web.Request) -> web.Response:
        index = len(self._posts_received)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = raw.decode(errors="replace")
        if index >= len(self.scenario.posts):
            self.errors.append(f"POST {request.path}: the recording has only {len(self.scenario.posts)} POSTs")
            return web.Response(status=500, text="not in the recording")
        recorded = self.scenario.posts[index]
        if recorded.path != request.path:
            self.errors.append(f"POST #{index} is {request.path}, the recording has {recorded.path}")
        answer: Any = recorded.body
        if recorded.run is not None:
            run = self.scenario.runs[recorded.run]
            ours = body.get("prompt_id") if isinstance(body, dict) else None
            ours = str(ours) if ours else str(uuid.uuid4())
            known = self.prompt_map.get(run.prompt_id)
            if known is not None and known != ours:
                self.errors.append(f"POST #{index}: recorded prompt {run.prompt_id} is already mapped to {known}, "
                                   f"got {ours}")
            self.prompt_map[run.prompt_id] = ours
            self._state[recorded.run] = "pending"
            expected_client = self.client_map.get(run.client_id) if run.client_id else None
            posted_client = body.get("client_id") if isinstance(body, dict) else None
            if run.history is not None and expected_client != posted_client:
                self.errors.append(f"POST #{index}: posted with client_id {posted_client!r}, the recording's prompt "
                                   f"came from {expected_client!r}")
            if run.history is not None and isinstance(body, dict) and body.get("prompt") != run.history["prompt"][2]:
                self.errors.append(f"POST #{index}: the graph differs from the recorded one")
            answer = self._map(recorded.body)
        self._posts_received.append({"path": request.path, "body": body, "at": time.monotonic()})
        async with self._changed:
            self._changed.notify_all()
        self._serve_record(request, recorded.status, answer)
        if answer is None:
            return web.Response(status=recorded.status)
        return web.json_response(answer, status=recorded.status)

    async def _get_history(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        body: dict[str, Any] = {}
        # the latest run of that id whose history is written (a reused id keeps the older entry until then)
        runs = [r for r in self._history_written if self.prompt_map.get(self.scenario.runs[r].prompt_id) == pid]
        if runs:
            body = self.history_body(max(runs))
        self._serve_record(request, 200, body)
        return web.json_response(body)

    def _queue_item(self, run: int) -> list[Any]:
        recorded = self.scenario.runs[run]
        if recorded.history is not None:
            return self._map(recorded.history["prompt"][:5])
        extra = {"client_id": recorded.client_id} if recorded.client_id else {}
        return self._map([recorded.number, recorded.prompt_id, {}, extra, []])

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._queue_item(r) for r, s in sorted(self._state.items()) if s == "running"]
        pending = [self._queue_item(r) for r, s in sorted(self._state.items()) if s == "pending"]
        body = {"queue_running": running, "queue_pending": pending}
        self._serve_record(request, 200, body)
        return web.json_response(body)

    async def _get_prompt(self, request: web.Request) -> web.Response:
        remaining = sum(1 for s in self._state.values() if s in ("pending", "running"))
        body = {"exec_info": {"queue_remaining": remaining}}
        self._serve_record(request, 200, body)
        return web.json_response(body)

    async def _get_view(self, request: web.Request) -> web.Response:
        filename = request.query.get("filename", "")
        if filename in self._images and request.query.get("type", "output") == "output":
            self._serve_record(request, 200, f"<png {filename}>")
            return web.Response(body=self._images[filename], content_type="image/png")
        self._serve_record(request, 404, None)
        return web.Response(status=404)

    async def _unexpected(self, request: web.Request) -> web.Response:
        self.errors.append(f"unexpected request {request.method} {request.path_qs}")
        self._serve_record(request, 404, None)
        return web.Response(status=404)
