"""A server that plays one recording of a real ComfyUI 0.3.64 back to a client, as that server did.

A recording (``tests/data/comfyui-traces/*.jsonl``) holds what the recorder's sockets received and its HTTP
exchanges.  ``scenario_of`` (tests/replay/scenario.py) turns it into a timeline; ``ReplayServer`` serves it on
127.0.0.1 (aiohttp, in a thread with its own event loop):

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
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from testkit.images import image_bytes, seeded_colour
from testkit.recordings import TERMINAL_TYPES, prompt_of
from tests.replay.scenario import Scenario, Step


def small_image(seed: str, fmt: str = "PNG") -> bytes:
    """A real 8x8 image standing in for one the recording names (its bytes were not recorded)."""
    return image_bytes((8, 8), seeded_colour(seed), fmt)


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
        self._images: dict[str, bytes] = {name: small_image(name) for run in scenario.runs for name in run.outputs}
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
        previous_t: float | None = None
        for step in self.scenario.steps:
            if step.kind == "gate":
                await self._await_post(step)
            elif step.kind == "connect":
                await self._await_connection(step)
            else:
                gap = step.t - previous_t if previous_t is not None else 0.0
                if gap > 0:
                    await asyncio.sleep(min(gap, self.max_gap))
                await self._play_step(step)
            previous_t = step.t
        self.finished.set()

    async def _await_post(self, step: Step) -> None:
        """Waits for the client's POST (no timeout: a test may stop before the end of the recording)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._posts_received) > step.gate)

    async def _await_connection(self, step: Step) -> None:
        if not await self._wait_for(lambda: self._connection_count.get(step.client_id, 0) >= step.connection):
            self.errors.append(f"no websocket connection {step.connection} for recorded client {step.label} "
                               f"within {self.wait_timeout}s")

    async def _play_step(self, step: Step) -> None:
        if step.writes_history:
            await self._write_histories(step.writes_history)
        for run in step.starts:
            if self._state.get(run) == "pending":
                self._state[run] = "running"
        if step.kind == "frame":
            await self._play_frame(step)
        elif step.kind == "binary":
            await self._send(self._client_of(step.label), self._binary(step))
        elif step.kind == "drop":
            self._drop(step.client_id)

    async def _write_histories(self, runs: list[int]) -> None:
        if self.history_delay:
            await asyncio.sleep(self.history_delay)
        for run in runs:
            self._history_written.add(run)
            self._state[run] = "done"
            pid = self.prompt_map.get(self.scenario.runs[run].prompt_id)
            self.milestones[f"history_written:{pid}"] = time.monotonic()

    async def _play_frame(self, step: Step) -> None:
        frame = step.frame
        if frame.get("type") == "executing" and prompt_of(frame) and frame["data"].get("node") is not None:
            self._running_node[step.label] = (prompt_of(frame), str(frame["data"]["node"]))
        if frame.get("type") in TERMINAL_TYPES:
            self.milestones[f"terminal:{self.prompt_map.get(prompt_of(frame))}"] = time.monotonic()
        await self._send(self._client_of(step.label), frame)

    def _drop(self, recorded_client: str) -> None:
        """Like a lost network: the connection ends without a close frame."""
        ws = self._sockets.get(recorded_client)
        if ws is None:
            return
        self.milestones[f"drop:{self.client_map.get(recorded_client)}"] = time.monotonic()
        request = self._requests.get(ws)
        del self._sockets[recorded_client]
        if request is not None and request.transport is not None:
            request.transport.abort()

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
            image = small_image(f"preview-{len(self.previews)}")
            meta = json.dumps(self._map(metadata)).encode()
            self.previews.append(image)
            return struct.pack(">II", 4, len(meta)) + meta + image
        image = small_image(f"preview-{len(self.previews)}", "JPEG" if word == 1 else "PNG")
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
        answer: Any = recorded.body if recorded.run is None else self._accept_run(index, recorded.run, body)
        self._posts_received.append({"path": request.path, "body": body, "at": time.monotonic()})
        async with self._changed:
            self._changed.notify_all()
        self._serve_record(request, recorded.status, answer)
        if answer is None:
            return web.Response(status=recorded.status)
        return web.json_response(answer, status=recorded.status)

    def _accept_run(self, index: int, run_index: int, body: Any) -> Any:
        """The POST of a recorded run: maps its prompt id to the client's, checks the client id and graph against
        the recording, and answers as recorded (ids mapped)."""
        run = self.scenario.runs[run_index]
        ours = body.get("prompt_id") if isinstance(body, dict) else None
        ours = str(ours) if ours else str(uuid.uuid4())
        known = self.prompt_map.get(run.prompt_id)
        if known is not None and known != ours:
            self.errors.append(f"POST #{index}: recorded prompt {run.prompt_id} is already mapped to {known}, "
                               f"got {ours}")
        self.prompt_map[run.prompt_id] = ours
        self._state[run_index] = "pending"
        expected_client = self.client_map.get(run.client_id) if run.client_id else None
        posted_client = body.get("client_id") if isinstance(body, dict) else None
        if run.history is not None and expected_client != posted_client:
            self.errors.append(f"POST #{index}: posted with client_id {posted_client!r}, the recording's prompt "
                               f"came from {expected_client!r}")
        if run.history is not None and isinstance(body, dict) and body.get("prompt") != run.history["prompt"][2]:
            self.errors.append(f"POST #{index}: the graph differs from the recorded one")
        return self._map(self.scenario.posts[index].body)

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
