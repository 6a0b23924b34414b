"""Websockets opened ahead of the next job, one per ComfyUI: a new job's prompt goes to ComfyUI under the client id
of a socket that is already listening, so its dispatch does not wait for a websocket handshake. Once a job has
taken the spare and submitted its prompt, the next spare is opened from a thread of its own.

Every spare has a fresh client id, used by one prompt only: ComfyUI forgets a client id's registration when any
socket with that id closes, so ids are never shared between sockets that may overlap. A spare is not used once
ComfyUI has closed it (a restart, a proxy's idle timeout) or once it is MAX_AGE old, since a socket whose peer has
vanished can look open for long; a spare that died unnoticed anyway is reconnected like any dropped socket, and its
prompt's end is then read from ComfyUI's history."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass

import websocket

from workers.comfyui.errors import ComfyUIUnavailable
from workers.comfyui.stream import StreamPolicy, connect

log = logging.getLogger("workers.comfyui.spare")

MAX_AGE = 300.0  # seconds a spare may wait for its job
FRAME_WAIT = 0.1  # seconds for the rest of a frame whose start has arrived


@dataclass(frozen=True)
class Spare:
    client_id: str
    ws: websocket.WebSocket
    opened: float  # monotonic

    def usable(self) -> bool:
        return time.monotonic() - self.opened < MAX_AGE and _still_open(self.ws)


def _still_open(ws: websocket.WebSocket) -> bool:
    """Reads what ComfyUI sent the socket while it waited (its status broadcasts: no prompt has the socket's client
    id yet), and says whether the socket is still open. A TLS socket is taken as open: it cannot be peeked at."""
    sock = ws.sock
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket):
        return True
    timeout = ws.gettimeout()
    if not _read_waiting(ws, sock):
        return False
    ws.settimeout(timeout)  # as it was, after the peeks' zero
    return True


def _read_waiting(ws: websocket.WebSocket, sock: socket.socket) -> bool:
    try:
        while True:
            sock.settimeout(0)  # the peek must not wait
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    return False
            except BlockingIOError:
                return True  # nothing more waiting
            ws.settimeout(FRAME_WAIT)
            opcode, _ = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return False
    except (OSError, websocket.WebSocketException):
        return False


class SpareSockets:
    """A worker process's spares, by ComfyUI URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spares: dict[str, Spare] = {}
        self._opening: set[str] = set()

    def take(self, url: str) -> Spare | None:
        """The spare for `url`, if one is usable; None otherwise (the caller opens a socket itself)."""
        with self._lock:
            spare = self._spares.pop(url.rstrip("/"), None)
        if spare is None or spare.usable():
            return spare
        _close(spare.ws)
        return None

    def give_back(self, url: str, spare: Spare) -> None:
        """A spare taken and not used (its job stepped aside, or resumed a prompt under the id it had): kept for the
        next job, unless another spare is there already."""
        with self._lock:
            kept = self._spares.setdefault(url.rstrip("/"), spare) is spare
        if not kept:
            _close(spare.ws)

    def refill(self, url: str, policy: StreamPolicy) -> None:
        """Open the next spare for `url` from a thread of its own, unless one is there or on its way."""
        url = url.rstrip("/")
        with self._lock:
            if url in self._spares or url in self._opening:
                return
            self._opening.add(url)
        threading.Thread(target=self._open, args=(url, policy), name="spare-socket", daemon=True).start()

    def _open(self, url: str, policy: StreamPolicy) -> None:
        client_id = str(uuid.uuid4())
        try:
            ws: websocket.WebSocket | None = connect(url, client_id, policy)
        except ComfyUIUnavailable as exc:
            log.info("no spare websocket for %s: %s", url, exc.reason)
            ws = None
        with self._lock:
            self._opening.discard(url)
            if ws is not None and url not in self._spares:
                self._spares[url] = Spare(client_id, ws, time.monotonic())
                return
        if ws is not None:
            _close(ws)


def _close(ws: websocket.WebSocket) -> None:
    try:
        ws.close(timeout=0)
    except (OSError, websocket.WebSocketException):
        pass
