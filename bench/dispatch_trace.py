"""Where a job's dispatch milliseconds go: Redis's MONITOR feed of every command, beside the simulator's request log.

For each job, from the moment its message is pushed onto the worker's own queue (inside the dispatch script) to
the moment ComfyUI has its /prompt:
- wake-up: the push -> the worker's first command about the job (kombu's BRPOP returning, Celery handing the
  message to the pool, the task starting);
- worker's Redis steps: that first command -> its last one before the /prompt (the start's pipeline, the lease's
  confirmation with the assignment);
- submit: that last command -> ComfyUI got /prompt (building the graph, the POST), and the websocket handshake when
  no spare socket was open for the job (workers/comfyui/spare.py): `sockets opened during dispatch` counts those.
The web's answer overlaps: `answered after the push` is how long the POST still took once the job was handed,
time the worker spends in parallel; the figure (POST returned -> /prompt) is the sum of the three less that."""
from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import Any

import redis

SEGMENTS = ("answered after the push", "wake-up", "worker's Redis steps", "submit")


@dataclass(frozen=True)
class Command:
    t: float
    lua: bool
    source: str  # the client's address and port
    text: str


class Monitor:
    """Every command Redis runs while it is open, with Redis's timestamp (the same clock as time.time() here)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[Command] = []
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        redis.Redis.from_url(self.url).ping()  # one more command, so that the reader wakes and sees the flag
        self._thread.join(5)

    def _read(self) -> None:
        with redis.Redis.from_url(self.url).monitor() as feed:
            self._ready.set()
            while not self._stopping.is_set():
                entry = feed.next_command()
                self.commands.append(Command(float(entry["time"]), entry.get("client_type") == "lua",
                                             f"{entry.get('client_address')}:{entry.get('client_port')}",
                                             entry["command"]))


def segments(monitor: Monitor, returned: dict[str, float], sim: Any) -> tuple[dict[str, list[float]], int]:
    """Seconds spent in each segment, one value per job that has all its marks; and how many of those jobs had
    their websocket opened after their push."""
    seen = sim.requests_seen()
    opened = {r["client_id"]: r["t"] for r in seen if r.get("path") == "/ws"}
    posted = {r["prompt_id"]: r for r in sim.posts("/prompt")}
    spent: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    late_sockets = 0
    for job_id, answered in returned.items():
        about = [c for c in monitor.commands if job_id in c.text]
        pushed = next((c.t for c in about if c.lua and c.text.startswith("LPUSH")), None)
        if pushed is None or job_id not in posted:
            continue
        prompted = posted[job_id]["t"]
        worker = [c.t for c in about if not c.lua and pushed < c.t < prompted]
        if not worker:
            continue
        marks = (answered - pushed, worker[0] - pushed, worker[-1] - worker[0], prompted - worker[-1])
        for name, seconds in zip(SEGMENTS, marks):
            spent[name].append(seconds)
        late_sockets += opened.get(posted[job_id].get("client_id"), 0) > pushed
    return spent, late_sockets


def breakdown(spent: dict[str, list[float]]) -> str:
    """`segment p50 ms` for each segment."""
    return ", ".join(f"{name} {statistics.median(values) * 1000:.2f}" for name, values in spent.items() if values)
