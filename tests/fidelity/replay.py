"""Replay a loaded recording against a live ComfyUI-compatible server and record what it answers.

Each action runs at its recorded time from the start of the scenario.  Where the recorder had waited for the end
of a prompt (``executing`` with ``node: null``, ``execution_success`` ...) before acting, the replay waits for
the same frame on the same socket (same occurrence) and keeps the recorded gap after it, so a faster or slower
server shifts the rest of the scenario instead of being asked about a prompt too early.  A kill and a restart
re-base the clock the same way (on the recorded "server process exited" / "start.sh" notes).

Each socket is a ``websocket-client`` connection with a reader thread that timestamps every frame; HTTP goes
through ``requests``.  Recorded prompt ids and client ids are mapped to the fresh ones the replay produces
(caller-chosen prompt ids are sent as they were); output file names asked for on ``/view`` are mapped through the
``executed`` frames / history of the same prompt and node.  The result is a recording of the same shape as the
input (``ws_open``, ``ws``, ``ws_binary``, ``ws_sent``, ``http``, ``note``, ``ws_close``,
``ws_closed_by_client``, ``ws_error``).
"""
from __future__ import annotations

import json
import signal as signal_module
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import parse_qsl, quote, urlsplit

import requests
import websocket

from testkit.waiting import poll

from .trace import Action, Trace, frame_key

HTTP_TIMEOUT = 30.0


class ServerControl(Protocol):
    """What the kill/restart scenarios need from the server under test."""

    def kill(self, sig: int) -> None: ...

    def restart(self) -> None: ...


@dataclass
class ReplayResult:
    trace: Trace
    events: list[dict[str, Any]]
    prompt_ids: dict[str, str]  # recorded -> replayed
    client_ids: dict[str, str]  # recorded -> replayed
    problems: list[str] = field(default_factory=list)  # replay-side trouble (anchor never seen, ...)

    def write_jsonl(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for event in self.events:
                fh.write(json.dumps(event) + "\n")


class _Recorder:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.seen: dict[tuple[str, str], list[float]] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, event: dict[str, Any], t: float | None = None) -> dict[str, Any]:
        event = {"t": round(self.now() if t is None else t, 4), **event}
        with self.cond:
            self.events.append(event)
            if event.get("kind") == "ws":
                key = (event["client"], frame_key(event["frame"]))
                self.seen.setdefault(key, []).append(event["t"])
            self.cond.notify_all()
        return event

    def wait_for(self, client: str, key: str, occurrence: int, timeout: float) -> float | None:
        """Time the ``occurrence``-th frame counted under ``key`` arrived on ``client`` (None: not within timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                times = self.seen.get((client, key), [])
                if len(times) > occurrence:
                    return times[occurrence]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.cond:
            return list(self.events)


class _Socket:
    def __init__(self, recorder: _Recorder, label: str, url: str):
        self.recorder = recorder
        self.label = label
        self.closing = False
        self.ws = websocket.create_connection(url, timeout=10)
        self.ws.settimeout(None)
        self.thread = threading.Thread(target=self._read, name=f"replay-ws-{label}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _read(self) -> None:
        rec = self.recorder
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except Exception as exc:  # noqa: BLE001 - every way a socket ends is an observation
                if not self.closing:
                    rec.add({"kind": "ws_error", "client": self.label, "error": f"{type(exc).__name__}: {exc}"})
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = data.decode("utf-8", "replace")
                try:
                    frame = json.loads(text)
                except ValueError:
                    frame = {"type": "<not json>", "data": text}
                rec.add({"kind": "ws", "client": self.label, "frame": frame})
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                event: dict[str, Any] = {
                    "kind": "ws_binary", "client": self.label, "length": len(data), "head_hex": data[:8].hex(),
                }
                if len(data) >= 8:
                    event["event_type"], event["image_format"] = struct.unpack(">II", data[:8])
                rec.add(event)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
                rec.add({"kind": "ws_close", "client": self.label, "code": code,
                         "reason": data[2:].decode("utf-8", "replace")})
                return

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def close(self) -> None:
        self.closing = True
        try:
            self.ws.send_close()
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.thread.join(timeout=2.0)
        try:
            self.ws.shutdown()
        except Exception:  # noqa: BLE001
            pass


class Replayer:
    def __init__(self, trace: Trace, url: str, control: ServerControl | None = None, *,
                 anchor_timeout: float = 20.0, tail: float = 0.5, log: Callable[[str], None] | None = None):
        self.trace = trace
        self.url = url.rstrip("/")
        self.ws_url = "ws" + self.url[len("http"):] + "/ws?clientId="
        self.control = control
        self.anchor_timeout = anchor_timeout
        self.tail = tail
        self.log = log or (lambda message: None)
        self.rec = _Recorder()
        self.sockets: dict[str, _Socket] = {}
        self.prompt_ids: dict[str, str] = {}
        self.client_ids: dict[str, str] = {}
        self.problems: list[str] = []
        self.http = requests.Session()
        self.recorded_files = _recorded_files(trace.events)

    # ---- id mapping -------------------------------------------------------------------------------------
    def client_id(self, recorded: str | None) -> str | None:
        if recorded is None:
            return None
        if recorded not in self.client_ids:
            self.client_ids[recorded] = str(uuid.uuid4())
        return self.client_ids[recorded]

    def map_value(self, value: Any) -> Any:
        if isinstance(value, str):
            if value in self.prompt_ids:
                return self.prompt_ids[value]
            if value in self.client_ids:
                return self.client_ids[value]
            return value
        if isinstance(value, list):
            return [self.map_value(v) for v in value]
        if isinstance(value, dict):
            return {self.map_value(k): self.map_value(v) for k, v in value.items()}
        return value

    def map_path(self, path: str) -> str:
        parts = urlsplit(path)
        segments = [self.prompt_ids.get(s, self.client_ids.get(s, s)) for s in parts.path.split("/")]
        new_path = "/".join(segments)
        if not parts.query:
            return new_path
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "filename":
                value = self.map_filename(value)
            query.append(f"{key}={quote(value, safe='')}")
        return new_path + "?" + "&".join(query)

    def map_filename(self, filename: str) -> str:
        where = self.recorded_files.get(filename)
        if where is None:
            return filename
        prompt_id, node, index = where
        fresh = self.prompt_ids.get(prompt_id)
        if fresh is None:
            return filename
        for event in reversed(self.rec.snapshot()):
            if event.get("kind") == "ws":
                data = event["frame"].get("data")
                if (event["frame"].get("type") == "executed" and isinstance(data, dict)
                        and data.get("prompt_id") == fresh and str(data.get("node")) == node):
                    images = (data.get("output") or {}).get("images") or []
                    if len(images) > index and isinstance(images[index], dict):
                        return images[index].get("filename", filename)
            elif event.get("kind") == "http" and isinstance(event.get("body"), dict):
                entry = event["body"].get(fresh)
                if isinstance(entry, dict):
                    images = ((entry.get("outputs") or {}).get(node) or {}).get("images") or []
                    if len(images) > index and isinstance(images[index], dict):
                        return images[index].get("filename", filename)
        return filename

    # ---- actions ----------------------------------------------------------------------------------------
    def run(self) -> ReplayResult:
        try:
            self._preamble()
            self.rec.t0 = time.monotonic()
            offset = 0.0
            for action in self.trace.actions:
                if action.anchor is not None:
                    a = action.anchor
                    budget = max(0.0, action.t + offset - self.rec.now()) + self.anchor_timeout
                    seen = self.rec.wait_for(a.client, a.key, a.occurrence, budget)
                    if seen is None:
                        self._problem(f"line {action.line}: never saw {a.client} {a.key} #{a.occurrence} "
                                      f"(recorded at {a.t}) before {action.describe()}")
                    else:
                        offset = seen - a.t
                self._sleep_until(action.t + offset)
                self.log(f"{self.rec.now():8.3f} {action.describe()}")
                new_base = self._perform(action)
                if new_base is not None:
                    offset = new_base
            self._sleep_until(self.trace.duration + offset + self.tail)
        finally:
            for label, sock in list(self.sockets.items()):
                if sock.thread.is_alive() and not sock.closing:
                    self.rec.add({"kind": "ws_closed_by_client", "client": label})
                    sock.close()
            self.http.close()
        events = sorted(self.rec.snapshot(), key=lambda e: e["t"])
        return ReplayResult(self.trace, events, dict(self.prompt_ids), dict(self.client_ids), self.problems)

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        self.rec.add({"kind": "note", "text": "replay: " + message})
        self.log("PROBLEM " + message)

    def _sleep_until(self, target: float) -> None:
        delay = target - self.rec.now()
        if delay > 0:
            time.sleep(delay)

    def _perform(self, action: Action) -> float | None:
        kind = action.kind
        if kind == "ws_open":
            cid = self.client_id(action.client_id)
            try:
                sock = _Socket(self.rec, action.client, self.ws_url + cid)
            except Exception as exc:  # noqa: BLE001
                self._problem(f"cannot open socket {action.client}: {type(exc).__name__}: {exc}")
                return None
            self.sockets[action.client] = sock
            self.rec.add({"kind": "ws_open", "client": action.client, "client_id": cid})
            sock.start()
        elif kind == "ws_send":
            sock = self.sockets.get(action.client)
            if sock is None:
                self._problem(f"no socket {action.client} to send on")
                return None
            frame = self.map_value(action.frame)
            sock.send(frame)
            self.rec.add({"kind": "ws_sent", "client": action.client, "frame": frame})
        elif kind == "ws_close":
            sock = self.sockets.get(action.client)
            if sock is not None:
                self.rec.add({"kind": "ws_closed_by_client", "client": action.client})
                sock.close()
        elif kind == "post_prompt":
            self._post_prompt(action)
        elif kind == "http":
            body = self.map_value(action.json_body) if action.json_body is not None else None
            self._http(action.method, self.map_path(action.path), json_body=body, raw_body=action.raw_body,
                       has_body=action.has_body)
        elif kind == "kill":
            if self.control is None:
                self._problem("no server control: cannot kill")
                return None
            self.rec.add({"kind": "note", "text": f"kill -{action.signal} server"})
            try:
                self.control.kill(getattr(signal_module, action.signal))
            except Exception as exc:  # noqa: BLE001 - e.g. it did not exit in time: say so, then make sure
                self._problem(f"kill -{action.signal}: the server did not exit ({type(exc).__name__}: {exc}); "
                              "killed with SIGKILL instead")
                self.control.kill(signal_module.SIGKILL)
            self.rec.add({"kind": "note", "text": "server process exited"})
            if action.done_t is not None:
                return self.rec.now() - action.done_t
        elif kind == "probe_http":
            try:
                response = self.http.get(self.url + action.path, timeout=3)
                self.rec.add({"kind": "note", "text": action.text, "status": response.status_code})
            except requests.RequestException as exc:
                self.rec.add({"kind": "note", "text": action.text, "error": f"{type(exc).__name__}: {exc}"})
        elif kind == "probe_ws":
            try:
                probe = websocket.create_connection(self.ws_url + (self.client_id(action.client_id) or ""), timeout=3)
                probe.close()
                self.rec.add({"kind": "note", "text": action.text, "connected": True})
            except Exception as exc:  # noqa: BLE001
                self.rec.add({"kind": "note", "text": action.text, "error": f"{type(exc).__name__}: {exc}"})
        elif kind == "restart":
            if self.control is None:
                self._problem("no server control: cannot restart")
                return None
            self.rec.add({"kind": "note", "text": "restarting server"})
            self.control.restart()
            self.rec.add({"kind": "note", "text": "start.sh", "rc": 0})
            if action.done_t is not None:
                return self.rec.now() - action.done_t
        else:  # pragma: no cover - the loader makes no other kinds
            raise ValueError(kind)
        return None

    def _prompt_body(self, action: Action) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": action.graph}
        cid = self.client_id(action.client_id)
        if cid is not None:
            body["client_id"] = cid
        if action.caller_prompt_id is not None:
            body["prompt_id"] = action.caller_prompt_id
        if action.front:
            body["front"] = True
        if action.extra_data:
            body["extra_data"] = self.map_value(action.extra_data)
        return body

    def _post_prompt(self, action: Action) -> None:
        event = self._http("POST", "/prompt", json_body=self._prompt_body(action), has_body=True, record_request=False)
        body = event.get("body")
        if action.prompt_id is not None:
            if isinstance(body, dict) and isinstance(body.get("prompt_id"), str):
                self.prompt_ids[action.prompt_id] = body["prompt_id"]
            else:
                self._problem(f"line {action.line}: POST /prompt gave no prompt_id (status {event.get('status')})")

    def _http(self, method: str, path: str, *, json_body: Any = None, raw_body: str | None = None,
              has_body: bool = False, record_request: bool = True) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": HTTP_TIMEOUT}
        if raw_body is not None:
            kwargs["data"] = raw_body.encode("utf-8")
        elif has_body:
            kwargs["json"] = json_body
        start = time.monotonic()
        event: dict[str, Any] = {"kind": "http", "method": method, "path": path}
        try:
            response = self.http.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            event.update({"status": None, "error": f"{type(exc).__name__}: {exc}",
                          "elapsed": round(time.monotonic() - start, 4)})
            return self.rec.add(event)
        content_type = response.headers.get("Content-Type", "")
        event.update({"status": response.status_code, "content_type": content_type,
                      "elapsed": round(time.monotonic() - start, 4)})
        if record_request and has_body:
            if raw_body is not None:
                event["request_raw"] = raw_body
            else:
                event["request"] = json_body
        data = response.content
        if content_type.startswith("application/json"):
            try:
                event["body"] = response.json()
            except ValueError:
                event["body_text"] = response.text
        elif content_type.startswith("text/"):
            event["body_text"] = response.text
        else:
            event["body_len"] = len(data)
            event["body_head_hex"] = data[:8].hex()
        return self.rec.add(event)

    def _preamble(self) -> None:
        """Post the prompts the recorded server already held, and wait until their history is written."""
        for action in self.trace.preamble:
            response = self.http.post(self.url + "/prompt", json=self._prompt_body(action), timeout=HTTP_TIMEOUT)
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            fresh = body.get("prompt_id") if isinstance(body, dict) else None
            if response.status_code != 200 or not fresh:
                self.problems.append(f"preamble POST /prompt failed: {response.status_code} {response.text[:200]}")
                continue
            self.prompt_ids[action.prompt_id] = fresh
            if not poll(lambda: self._in_history(fresh), self.anchor_timeout, interval=0.1):
                self.problems.append(f"preamble prompt {fresh} never reached the history")

    def _in_history(self, prompt_id: str) -> bool:
        answer = self.http.get(f"{self.url}/history/{prompt_id}", timeout=HTTP_TIMEOUT)
        return answer.status_code == 200 and bool(answer.json())


def _recorded_files(events: list[dict[str, Any]]) -> dict[str, tuple[str, str, int]]:
    """Recorded output file name -> (prompt_id, node, index in its images) from executed frames and histories."""
    files: dict[str, tuple[str, str, int]] = {}
    for event in events:
        if event.get("kind") == "ws" and event["frame"].get("type") == "executed":
            data = event["frame"].get("data") or {}
            for index, image in enumerate((data.get("output") or {}).get("images") or []):
                if isinstance(image, dict) and "filename" in image:
                    files.setdefault(image["filename"], (data.get("prompt_id"), str(data.get("node")), index))
        elif event.get("kind") == "http" and isinstance(event.get("body"), dict):
            for prompt_id, entry in event["body"].items():
                if not isinstance(entry, dict) or not isinstance(entry.get("outputs"), dict):
                    continue
                for node, output in entry["outputs"].items():
                    for index, image in enumerate((output or {}).get("images") or []):
                        if isinstance(image, dict) and "filename" in image:
                            files.setdefault(image["filename"], (prompt_id, str(node), index))
    return files


def replay(trace: Trace, url: str, control: ServerControl | None = None, **options: Any) -> ReplayResult:
    return Replayer(trace, url, control, **options).run()


if __name__ == "__main__":  # python -m tests.fidelity.replay URL TRACE.jsonl [OUT.jsonl]
    import sys

    from testkit.recordings import load_recording

    from .compare import compare_recordings, format_mismatches
    from .trace import trace_of

    server_url, trace_path = sys.argv[1], sys.argv[2]
    loaded = trace_of(load_recording(trace_path))
    if any(a.kind in ("kill", "restart") for a in loaded.actions):
        sys.exit(f"{loaded.name} kills the server: run it through pytest (it needs a SimulatorProcess)")
    result = replay(loaded, server_url, log=print)
    if len(sys.argv) > 3:
        result.write_jsonl(sys.argv[3])
    mismatches = compare_recordings(loaded.events, result.events)
    print(format_mismatches(mismatches) if mismatches else "no differences")
    for problem in result.problems:
        print("replay problem:", problem)
