"""Signatures of recordings, and the differences between two of them.

A signature keeps what a client of ComfyUI may rely on and drops what legitimately differs between two runs
(ids, file names, timestamps, numbers, progress values):

- per socket label, the sequence of websocket messages: the type (binary frames as ``binary:<event_type>``),
  whether its data carries ``prompt_id``, and the key structure of its data (``shape`` below: the sorted keys,
  and nested keys down to 4 levels, which covers each node entry of ``progress_state`` and the
  ``status.exec_info`` keys of ``status``); and how the socket ended when the server ended it (dropped without a
  close frame, or a close frame with its code);
- per HTTP exchange, in order: method, path template (prompt ids, client ids and uuids as ``{id}``, the
  ``filename`` query value as ``{filename}``), status, content type family, and the key structure of the body
  (dicts keyed by ids, like ``/history`` answers or ``node_errors``, as ``{<id>:<shape of each entry>}``; for
  ``GET /queue`` also the number of running and pending items); non-JSON bodies as ``empty``, ``text``,
  ``png``, ``jpeg`` or ``bytes``;
- the outcome of the probes made while the server was down (``refused`` ...).

Shapes show a key alone when its value is a scalar, ``key:null`` when it is null, ``key:{...}`` for a nested
dict, ``[...]`` for a list (of dicts: the keys of its items).

Order: each socket's sequence is compared in order (a diff, so one moved block shows as missing + unexpected);
how frames of different sockets interleave is not compared (each socket is its own sequence).  The HTTP
exchanges are compared in order (the replay makes them one after the other, as the recorder did).

Normalisation of ``status`` frames: none.  Every ``status`` frame counts, in its place.  ComfyUI sends one per
queue change (put, taken by the worker, task done, delete of a pending prompt, clear) plus one on connect; the
count follows from the actions, and the replay reproduces the recorder's timing closely enough (it waits for the
frame the recorder reacted to) that neither the count nor the position changed over repeated runs of every
recording, also with two replays running in parallel on 2 cores.  So no case was found where the count depends
only on scheduling jitter, and ``normalise_socket`` is the identity.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlsplit

from .trace import is_uuid, known_prompt_ids

WS_DEPTH = 4
HTTP_DEPTH = 4
PROBE_NOTES = ("HTTP after kill", "ws reconnect after kill")


# ---- shapes -------------------------------------------------------------------------------------------------
def _id_like(key: str, ids: set[str]) -> bool:
    return is_uuid(key) or key.isdigit() or key in ids


def shape(value: Any, depth: int, ids: set[str] = frozenset()) -> str:
    """The key structure of a JSON value, ``depth`` levels of named keys deep (id-keyed levels are free)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        if not value:
            return "{}"
        if depth <= 0:
            return "{...}"
        if all(_id_like(str(k), ids) for k in value):
            entries = sorted({shape(v, depth, ids) for v in value.values()})
            return "{<id>:" + "|".join(entries) + "}"
        parts = []
        for key in sorted(value, key=str):
            sub = shape(value[key], depth - 1, ids)
            parts.append(str(key) if sub == "" else f"{key}:{sub}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        if value and depth > 0 and all(isinstance(v, dict) for v in value):
            return "[" + "|".join(sorted({shape(v, depth - 1, ids) for v in value})) + "]"
        return "[]"
    return ""


def path_template(path: str, ids: set[str] = frozenset()) -> str:
    parts = urlsplit(path)
    segments = ["{id}" if (is_uuid(s) or s in ids) else s for s in parts.path.split("/")]
    template = "/".join(segments)
    if parts.query:
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "filename":
                value = "{filename}"
            elif is_uuid(value) or value in ids:
                value = "{id}"
            query.append(f"{key}={value}")
        template += "?" + "&".join(query)
    return template


def content_family(content_type: str | None) -> str:
    mime = (content_type or "").split(";")[0].strip().lower()
    if not mime:
        return "none"
    if mime == "application/json":
        return "json"
    major = mime.split("/")[0]
    return major if major in ("text", "image") else mime


def _device_indexes_as_gpus(body: dict[str, Any]) -> dict[str, Any]:
    """The recorded server ran on a CPU, whose device `index` is null; a GPU's (the simulator's) is a number.
    That one value is the only place a CPU and a GPU answer differ in shape, so it is not compared."""
    devices = [{**d, "index": 0} if isinstance(d, dict) and "index" in d else d for d in body.get("devices", [])]
    return {**body, "devices": devices}


def body_shape(event: dict[str, Any], template: str, ids: set[str]) -> str:
    if "error" in event and event.get("status") is None:
        return "no answer"
    if "body" in event:
        body = event["body"]
        if template == "/system_stats" and isinstance(body, dict):
            body = _device_indexes_as_gpus(body)
        text = shape(body, HTTP_DEPTH, ids)
        if event.get("method") == "GET" and template == "/queue" and isinstance(body, dict):
            counts = ",".join(f"{k}*{len(v)}" for k, v in sorted(body.items()) if isinstance(v, list))
            text += f" ({counts})"
        return text
    if "body_text" in event:
        return "text" if event["body_text"] else "empty"
    if not event.get("body_len"):
        return "empty"
    head = str(event.get("body_head_hex", ""))
    if head.startswith("89504e47"):
        return "png"
    if head.startswith("ffd8ff"):
        return "jpeg"
    return "bytes"


# ---- signature ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WsItem:
    type: str
    has_prompt_id: bool | None
    keys: str
    t: float = field(default=0.0, compare=False)
    line: int | None = field(default=None, compare=False)

    def text(self) -> str:
        if self.type.startswith("binary:"):
            return self.type
        pid = "+prompt_id" if self.has_prompt_id else "-prompt_id"
        return f"{self.type} {pid} {self.keys}"


@dataclass(frozen=True)
class HttpItem:
    method: str
    path: str
    status: Any
    content: str
    body: str
    t: float = field(default=0.0, compare=False)
    line: int | None = field(default=None, compare=False)

    def text(self) -> str:
        return f"{self.method} {self.path} -> {self.status} {self.content} {self.body}"


@dataclass
class Signature:
    ws: dict[str, list[WsItem]]
    endings: dict[str, str]  # label -> how the server ended the socket (absent: the client closed it)
    http: list[HttpItem]
    probes: list[tuple[str, str]]


def ws_item(event: dict[str, Any], ids: set[str]) -> WsItem:
    t = float(event.get("t", 0.0))
    line = event.get("_line")
    if event["kind"] == "ws_binary":
        return WsItem(f"binary:{event.get('event_type')}", None, "", t, line)
    frame = event.get("frame") or {}
    data = frame.get("data")
    has_pid = isinstance(data, dict) and "prompt_id" in data
    return WsItem(str(frame.get("type")), has_pid, shape(data, WS_DEPTH, ids), t, line)


def signature(events: Iterable[dict[str, Any]]) -> Signature:
    events = list(events)
    ids = known_prompt_ids(events) | {e["client_id"] for e in events if e.get("kind") == "ws_open"}
    ws: dict[str, list[WsItem]] = {}
    ended: dict[str, str] = {}
    by_client: set[str] = set()
    http: list[HttpItem] = []
    probes: list[tuple[str, str]] = []
    for event in events:
        kind = event.get("kind")
        if kind == "ws_open":
            ws.setdefault(event["client"], [])
        elif kind in ("ws", "ws_binary"):
            ws.setdefault(event["client"], []).append(ws_item(event, ids))
        elif kind == "ws_closed_by_client":
            by_client.add(event["client"])
        elif kind == "ws_error":
            ended.setdefault(event["client"], "dropped without a close frame")
        elif kind == "ws_close":
            ended.setdefault(event["client"], f"close frame {event.get('code')}")
        elif kind == "http":
            template = path_template(event["path"], ids)
            http.append(HttpItem(event["method"], template, event.get("status"), content_family(event.get("content_type")),
                                 body_shape(event, template, ids), float(event.get("t", 0.0)), event.get("_line")))
        elif kind == "note" and event.get("text") in PROBE_NOTES:
            probes.append((event["text"], probe_outcome(event)))
    endings = {label: how for label, how in ended.items() if label not in by_client}
    return Signature({label: normalise_socket(items) for label, items in ws.items()}, endings, http, probes)


def probe_outcome(event: dict[str, Any]) -> str:
    error = event.get("error")
    if error:
        return "refused" if "refused" in str(error).lower() else f"error {str(error).split(':')[0]}"
    if "status" in event:
        return f"answered {event['status']}"
    return "connected"


def normalise_socket(items: list[WsItem]) -> list[WsItem]:
    """The place for a normalisation of one socket's sequence; deliberately none (see the module docstring)."""
    return items


# ---- differences ---------------------------------------------------------------------------------------------
@dataclass
class Mismatch:
    section: str  # ws / socket / http / probe
    client: str | None
    position: int | None  # 1-based position in the expected sequence (None: past its end)
    expected: str | None
    got: str | None
    got_position: int | None = None
    expected_t: float | None = None
    got_t: float | None = None

    def text(self) -> str:
        where = self.section if self.client is None else f"{self.section} {self.client}"
        pos = f"#{self.position}" if self.position is not None else "(end)"
        if self.got_position is not None and self.got_position != self.position:
            pos += f" (got #{self.got_position})"
        when = ""
        if self.expected_t is not None or self.got_t is not None:
            exp_t = f"{self.expected_t:.3f}" if self.expected_t is not None else "-"
            got_t = f"{self.got_t:.3f}" if self.got_t is not None else "-"
            when = f"  [t expected {exp_t} / got {got_t}]"
        if self.expected is None:
            return f"{where} {pos}: unexpected {self.got}{when}"
        if self.got is None:
            return f"{where} {pos}: missing {self.expected}{when}"
        return f"{where} {pos}: expected {self.expected} | got {self.got}{when}"


def _diff_sequences(section: str, client: str | None, expected: list[Any], got: list[Any]) -> list[Mismatch]:
    out: list[Mismatch] = []
    matcher = difflib.SequenceMatcher(None, expected, got, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        pairs = max(i2 - i1, j2 - j1)
        for k in range(pairs):
            exp = expected[i1 + k] if i1 + k < i2 else None
            act = got[j1 + k] if j1 + k < j2 else None
            out.append(Mismatch(
                section, client,
                position=(i1 + k + 1) if exp is not None else (i2 + 1 if i2 < len(expected) else None),
                expected=exp.text() if exp is not None else None,
                got=act.text() if act is not None else None,
                got_position=(j1 + k + 1) if act is not None else None,
                expected_t=getattr(exp, "t", None) if exp is not None else None,
                got_t=getattr(act, "t", None) if act is not None else None,
            ))
    return out


def diff_signatures(expected: Signature, got: Signature) -> list[Mismatch]:
    out: list[Mismatch] = []
    for label in list(expected.ws) + [c for c in got.ws if c not in expected.ws]:
        if label not in got.ws:
            out.append(Mismatch("ws", label, None, "a socket", "no socket"))
            continue
        if label not in expected.ws:
            out.append(Mismatch("ws", label, None, "no socket", "a socket"))
            continue
        out.extend(_diff_sequences("ws", label, expected.ws[label], got.ws[label]))
    for label in sorted(set(expected.endings) | set(got.endings)):
        exp = expected.endings.get(label, "still open or closed by the client")
        act = got.endings.get(label, "still open or closed by the client")
        if exp != act:
            out.append(Mismatch("socket end", label, None, exp, act))
    out.extend(_diff_sequences("http", None, expected.http, got.http))
    for index in range(max(len(expected.probes), len(got.probes))):
        exp = expected.probes[index] if index < len(expected.probes) else None
        act = got.probes[index] if index < len(got.probes) else None
        if exp != act:
            out.append(Mismatch("probe", None, index + 1, " ".join(exp) if exp else None, " ".join(act) if act else None))
    return out


def compare_recordings(expected_events: Iterable[dict[str, Any]], got_events: Iterable[dict[str, Any]]) -> list[Mismatch]:
    return diff_signatures(signature(expected_events), signature(got_events))


def _kind(m: Mismatch) -> str:
    return "unexpected" if m.expected is None else "missing" if m.got is None else "changed"


def format_mismatches(mismatches: list[Mismatch], title: str | None = None, *, compress: int = 4) -> str:
    """One line per mismatch; a run of more than ``compress`` missing (or unexpected) frames of one socket
    in a row is one line with the count of each message type."""
    lines = [title] if title else []
    index = 0
    while index < len(mismatches):
        m = mismatches[index]
        run = [m]
        kind = _kind(m)
        while (kind != "changed" and index + len(run) < len(mismatches)
               and _kind(nxt := mismatches[index + len(run)]) == kind
               and (nxt.section, nxt.client) == (m.section, m.client)):
            run.append(nxt)
        if len(run) > compress:
            side = [r.got if kind == "unexpected" else r.expected for r in run]
            counts: dict[str, int] = {}
            for text in side:
                counts[text.split(" ")[0]] = counts.get(text.split(" ")[0], 0) + 1
            where = m.section if m.client is None else f"{m.section} {m.client}"
            first, last = run[0], run[-1]
            if kind == "unexpected":
                span = f"got #{first.got_position}-#{last.got_position} (expected position {first.position or '(end)'})"
                times = f"t {first.got_t:.3f}-{last.got_t:.3f}" if first.got_t is not None else ""
            else:
                span = f"#{first.position}-#{last.position}"
                times = f"t {first.expected_t:.3f}-{last.expected_t:.3f}" if first.expected_t is not None else ""
            summary = ", ".join(f"{name} x{count}" for name, count in counts.items())
            lines.append(f"  {where} {span}: {len(run)} {kind} frames ({summary}) [{times}]; first: {side[0]}")
        else:
            lines += [f"  {r.text()}" for r in run]
        index += len(run)
    return "\n".join(lines)
