"""ComfyUI's HTTP routes and websocket, answering with ComfyUI 0.3.64's status codes and body shapes."""
from __future__ import annotations

import asyncio
import json
import logging
import platform
import sys
import time
import uuid
from typing import Any, Awaitable, Callable, TextIO

from aiohttp import web

from comfysim.catalogue import combo_lists, offered_nodes
from comfysim.executor import Executor
from comfysim.hub import SERVER_FEATURES, Hub
from comfysim.prompt_queue import PromptQueue
from comfysim.settings import Settings
from comfysim.storage import Storage
from comfysim.validation import validate_prompt

log = logging.getLogger("comfysim.server")

COMFYUI_VERSION = "0.3.64"
SIMULATED_VRAM = 24 * 1024 ** 3
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestLog:
    """The request log file (the request_log setting, which may change while the simulator runs), kept open and
    line-buffered: each record is one write, on disk at once (a killed simulator loses none)."""

    def __init__(self) -> None:
        self.path = ""
        self.file: TextIO | None = None

    def write(self, path: str, line: str) -> None:
        if self.file is None or path != self.path:
            if self.file is not None:
                self.file.close()
            self.file, self.path = open(path, "a", encoding="utf-8", buffering=1), path
        self.file.write(line)


class Simulator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.started = time.time()
        self.storage = Storage(settings.data_dir)
        self.hub = Hub(settings)
        self.queue = PromptQueue(self.broadcast_status)
        self.executor = Executor(settings, self.hub, self.queue, self.storage, self.log_request)
        self.requests_seen: list[dict[str, Any]] = []
        self.request_log = RequestLog()

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def broadcast_status(self) -> None:
        self.hub.send("status", {"status": self.queue_info()}, None)

    def combos(self) -> dict[str, list[str]]:
        return combo_lists(list(self.settings.checkpoints), self.storage.input_files())

    def log_request(self, record: dict[str, Any]) -> None:
        record = {"t": round(time.time(), 4), **record}
        self.requests_seen.append(record)
        if self.settings.request_log:
            self.request_log.write(self.settings.request_log, json.dumps(record) + "\n")

    # --- prompts and queue
    async def post_prompt(self, request: web.Request) -> web.Response:
        if self.settings.refuse_prompt:
            if self.settings.refuse_prompt > 0:
                self.settings.refuse_prompt -= 1
            raise web.HTTPInternalServerError(text="500 Internal Server Error\n\nServer got itself in trouble")
        body = await request.json()
        number = float(body["number"]) if "number" in body else self.queue.next_number(bool(body.get("front")))
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        verdict = validate_prompt(prompt, self.combos(), lambda name: name in self.storage.input_files(),
                                  offered_nodes(self.settings.custom_nodes))
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not verdict.ok:
            return web.json_response({"error": verdict.error, "node_errors": verdict.node_errors}, status=400)
        self.queue.put([number, prompt_id, prompt, extra_data, verdict.outputs])
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.snapshot())

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.clear_pending()
        if "delete" in body:
            self.queue.delete_pending(list(body["delete"]))
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if (not prompt_id or prompt_id in self.queue.running_ids()) and not self.settings.ignore_interrupt:
            self.executor.interrupt()
        return web.Response(status=200)

    # --- history
    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        return web.json_response(self.queue.history_page(int(max_items) if max_items else None, offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.history.clear()
        for prompt_id in body.get("delete", []):
            self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    # --- files
    async def view(self, request: web.Request) -> web.StreamResponse:
        if self.settings.view_delay > 0:
            await asyncio.sleep(self.settings.view_delay)
        if self.settings.fail_view > 0:
            self.settings.fail_view -= 1
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        found = self.storage.view_path(filename, query.get("subfolder", ""), query.get("type", "output"))
        if isinstance(found, int):
            return web.Response(status=found)
        return web.FileResponse(found, headers={"Content-Disposition": f'filename="{filename}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        overwrite = str(post.get("overwrite", "")).lower() in ("true", "1")
        result = self.storage.save_upload(image.filename, image.file.read(), str(post.get("subfolder", "")),
                                          overwrite, str(post.get("type", "input")))
        if isinstance(result, int):
            return web.Response(status=result)
        return web.json_response(result)

    # --- information
    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "system": {
                "os": "posix", "ram_total": SIMULATED_VRAM * 2, "ram_free": SIMULATED_VRAM * 2,
                "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.27.10",
                "installed_templates_version": "0.1.95", "required_templates_version": "0.1.95",
                "python_version": sys.version, "pytorch_version": "simulated",
                "embedded_python": False, "argv": ["comfysim", "--port", str(self.settings.port)],
            },
            "devices": [{
                "name": f"cuda:0 Simulated GPU ({platform.node()})", "type": "cuda", "index": 0,
                "vram_total": SIMULATED_VRAM, "vram_free": SIMULATED_VRAM,
                "torch_vram_total": SIMULATED_VRAM, "torch_vram_free": SIMULATED_VRAM,
            }],
        })

    async def object_info(self, request: web.Request) -> web.Response:
        combos = self.combos()
        wanted = request.match_info.get("node_class")
        offered = offered_nodes(self.settings.custom_nodes)
        specs = [offered[wanted]] if wanted in offered else [] if wanted else list(offered.values())
        return web.json_response({spec.name: spec.object_info(combos) for spec in specs})

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    # --- simulator control (not part of ComfyUI)
    async def sim_settings(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.settings.update(await request.json())
            except (KeyError, ValueError, TypeError) as exc:
                return web.json_response({"error": f"unknown or invalid setting: {exc}"}, status=400)
        return web.json_response(self.settings.public())

    async def sim_history(self, request: web.Request) -> web.Response:
        """The prompt's history entry as ComfyUI wrote it, even once deleted from the history."""
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.recorded.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests_seen)

    # --- websocket
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self.log_request({"method": "WS", "path": "/ws", "client_id": sid})
        self.hub.register(sid, ws, request.transport)
        try:
            self.hub.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                self.hub.send("executing", {"node": self.executor.last_node_id}, sid)
            first = True
            async for message in ws:
                if message.type.name == "TEXT":
                    self._client_message(sid, message.data, first)
                    first = False
        finally:
            self.hub.forget(sid)  # whichever socket holds sid now, as ComfyUI's websocket_handler does
        return ws

    def _client_message(self, sid: str, text: str, first: bool) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return
        if first and isinstance(data, dict) and data.get("type") == "feature_flags":
            self.hub.feature_flags[sid] = data.get("data", {})
            self.hub.send("feature_flags", SERVER_FEATURES, sid)


GARBAGE = {
    "prompt": lambda: web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html"),
    "history": lambda: web.Response(text="not json at all", content_type="application/json"),
    "queue": lambda: web.json_response(["a", "list", "not", "a", "queue"]),
    "view": lambda: web.Response(body=b"\x89PNG but not really an image", content_type="image/png"),
}


@web.middleware
async def _garbage(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The `garbage` fault: a route that answers 200 with something that is not what ComfyUI promises."""
    route = request.app["simulator"].settings.garbage
    if route and request.path.strip("/").split("/")[0] == route:
        return GARBAGE[route]()
    return await handler(request)


# Which fields of a JSON body the request log keeps, per route: enough to tell which prompt a request was about.
LOGGED_BODIES = {"/prompt": ("prompt_id", "client_id"), "/queue": ("delete", "clear"), "/history": ("delete", "clear"),
                 "/interrupt": ("prompt_id",)}


@web.middleware
async def _request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    simulator: Simulator = request.app["simulator"]
    if request.path != "/ws" and not request.path.startswith("/sim/"):
        record: dict[str, Any] = {"method": request.method, "path": request.path_qs}
        if request.method == "POST" and request.path in LOGGED_BODIES and request.can_read_body:
            body = await request.read()
            try:
                parsed = json.loads(body)
                record.update({name: parsed[name] for name in LOGGED_BODIES[request.path] if name in parsed})
            except (ValueError, TypeError):
                pass
        simulator.log_request(record)
    return await handler(request)


def create_app(settings: Settings) -> web.Application:
    simulator = Simulator(settings)
    app = web.Application(middlewares=[_request_log, _garbage], client_max_size=SERVER_FEATURES["max_upload_size"])
    app["simulator"] = simulator
    s = simulator
    app.add_routes([
        web.get("/ws", s.websocket),
        web.post("/prompt", s.post_prompt), web.get("/prompt", s.get_prompt),
        web.get("/queue", s.get_queue), web.post("/queue", s.post_queue),
        web.post("/interrupt", s.post_interrupt),
        web.get("/history", s.get_history), web.get("/history/{prompt_id}", s.get_history_item),
        web.post("/history", s.post_history),
        web.get("/view", s.view), web.post("/upload/image", s.upload_image),
        web.get("/system_stats", s.system_stats), web.get("/features", s.features),
        web.get("/object_info", s.object_info), web.get("/object_info/{node_class}", s.object_info),
        web.get("/sim/settings", s.sim_settings), web.post("/sim/settings", s.sim_settings),
        web.get("/sim/requests", s.sim_requests), web.get("/sim/history/{prompt_id}", s.sim_history),
    ])

    async def start_background(app: web.Application) -> Any:
        tasks = [asyncio.create_task(s.hub.publish_forever()), asyncio.create_task(s.executor.run_forever())]
        yield
        for task in tasks:
            task.cancel()

    app.cleanup_ctx.append(start_background)
    return app
