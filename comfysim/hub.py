"""The websocket side: connected clients, and one ordered outbox, like ComfyUI's PromptServer.send_sync."""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any

from aiohttp import web

from comfysim.settings import Settings

log = logging.getLogger("comfysim.hub")

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}


class Hub:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.transports: dict[str, asyncio.BaseTransport] = {}
        self.feature_flags: dict[str, dict[str, Any]] = {}
        self.frames_sent: dict[str, int] = {}
        self.outbox: asyncio.Queue[tuple[str | None, str | bytes]] = asyncio.Queue()

    def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """Queue a JSON message: to one client id, or to everyone when sid is None. `data` is serialised now: the
        caller may change it afterwards."""
        self.outbox.put_nowait((sid, json.dumps({"type": event, "data": data})))

    def send_preview(self, image_format: str, image: bytes, metadata: dict[str, Any] | None, sid: str | None) -> None:
        if metadata is None:
            payload = struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS[image_format]) + image
        else:
            meta = json.dumps({**metadata, "image_type": f"image/{image_format.lower()}"}).encode()
            payload = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image
        self.outbox.put_nowait((sid, payload))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        return sid is not None and bool(self.feature_flags.get(sid, {}).get("supports_preview_metadata"))

    async def publish_forever(self) -> None:
        while True:
            sid, message = await self.outbox.get()
            targets = list(self.sockets) if sid is None else [sid] if sid in self.sockets else []
            for target in targets:
                await self._deliver(target, message)

    async def _deliver(self, sid: str, message: str | bytes) -> None:
        ws = self.sockets.get(sid)
        if ws is None or ws.closed:
            return
        try:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("send to %s failed: %s", sid, exc)
            return
        self.frames_sent[sid] = self.frames_sent.get(sid, 0) + 1
        limit = self.settings.drop_ws_after
        if limit and self.frames_sent[sid] >= limit:
            self.drop(sid)

    def register(self, sid: str, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        """A new socket for sid replaces the old one, which stays open but hears nothing more; when the old one
        closes, its teardown forgets sid, deafening the new one too (as ComfyUI's server.py does)."""
        self.forget(sid)
        self.sockets[sid] = ws
        if transport is not None:
            self.transports[sid] = transport

    def forget(self, sid: str) -> None:
        self.sockets.pop(sid, None)
        self.transports.pop(sid, None)
        self.feature_flags.pop(sid, None)
        self.frames_sent.pop(sid, None)

    def drop(self, sid: str) -> None:
        """Cut a client's connection without a close frame, as a crashed server or a broken network does."""
        transport = self.transports.get(sid)
        self.forget(sid)
        if transport is not None:
            transport.abort()
