"""Issue 18's two figures of the GPU worker, each measured on the bench stack (bench/stack.py):

12. the CPU one job costs the worker process (20 steps, previews on, one 1 MB PNG), its idle baseline subtracted,
    with a breakdown measured by the worker's job thread itself (time.thread_time around its own functions);
13. the completion latency of figure 2 beyond what a bare websocket-client script needs on the same simulator.

`python -m bench.worker_cost [worker_cpu_per_job] [completion_overhead]` prints them (both by default);
`python -m bench.worker_cost --parts FILE <worker options>` is the instrumented worker of the breakdown."""
from __future__ import annotations

import functools
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urlsplit

import redis
import websocket
from celery.signals import task_postrun, task_prerun
from celery.states import READY_STATES, SUCCESS

from bench.figures import Figure, completion_latency, ms, pct, post_job
from bench.stack import Stack
from testkit.jobs import template_graph
from testkit.services import SimulatorProcess, WorkerProcess

STEP_SECONDS = 0.12  # above the bench's PROGRESS_INTERVAL (0.1 s): every step is written, as on a real GPU
JOB = {"prompt": "bench", "steps": 20, "width": 584, "height": 584}  # noise 1.0 makes that a ~1 MB PNG
JOBS = 10
SETTLE = 0.3  # seconds a job's window lasts past its SUCCESS: the task's end (clean-up, ack, events) is in it
IDLE = 1.5  # seconds of idle window after each job, for the baseline


# --- the worker's CPU, from outside

def cpu_seconds(pid: int) -> float:
    """The process's own CPU clock (the clock clock_getcpuclockid(pid) names), every thread's, ended ones too: what
    /proc/<pid>/stat counts as utime + stime, in nanoseconds instead of its 10 ms ticks."""
    return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of the process pid


def worker_pid(stack: Stack) -> int:
    """The one GPU worker's process. Its pool runs jobs in threads (workers/pool.py): no child process shares
    the work, which the check below makes sure of."""
    (worker,) = stack.workers
    assert worker.process is not None
    children = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True).stdout
    assert not children.split(), f"the worker has child processes {children.split()}: sum their CPU too"
    return worker.process.pid


def run_job(web: str, results: Any) -> int:
    """Runs one job to SUCCESS; returns how many PROGRESS states it wrote (the backend publishes each)."""
    job_id, _ = post_job(web, **JOB)
    writes = 0
    for message in results.listen():
        if message["type"] != "pmessage" or not message["channel"].decode().endswith(job_id):
            continue
        status = json.loads(message["data"])["status"]
        if status in READY_STATES:
            assert status == SUCCESS, message
            return writes
        writes += status == "PROGRESS"
    raise AssertionError("the result notifications ended")


def run_and_settle(web: str, results: Any) -> int:
    """run_job, then SETTLE seconds for the task's end."""
    writes = run_job(web, results)
    time.sleep(SETTLE)
    return writes


@dataclass(frozen=True)
class Window:
    """A stretch of time: the worker's CPU seconds in it, its wall seconds, and what the work in it returned."""
    cpu: float
    wall: float
    outcome: Any = None


def measured(pid: int, work: Callable[[], Any]) -> Window:
    cpu, started = cpu_seconds(pid), time.monotonic()
    outcome = work()
    return Window(cpu_seconds(pid) - cpu, time.monotonic() - started, outcome)


def job_costs(stack: Stack, web: str, results: Any, jobs: int) -> dict[str, float]:
    """Each job, then an idle window (interleaved, so that the machine's load changes both alike): the median
    job's CPU beyond the idle windows' rate over its wall time; the means of the rest."""
    pid = worker_pid(stack)
    done, idle = [], []
    for _ in range(jobs):
        done.append(measured(pid, lambda: run_and_settle(web, results)))
        idle.append(measured(pid, lambda: time.sleep(IDLE)))
    rate = sum(window.cpu for window in idle) / sum(window.wall for window in idle)
    wall = statistics.mean(window.wall for window in done)
    return {"cpu": statistics.median(window.cpu - rate * window.wall for window in done), "baseline": rate * wall,
            "rate": rate, "wall": wall, "writes": statistics.mean(window.outcome for window in done)}


# --- the breakdown, from inside: an instrumented worker

Totals = Callable[[], Counter]


def timed(function: Callable[..., Any], part: str, totals: Totals) -> Callable[..., Any]:
    @functools.wraps(function)
    def measure(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            totals()[part] += time.thread_time() - started
    return measure


def timed_generator(function: Callable[..., Iterator[Any]], part: str, totals: Totals) -> Callable[..., Any]:
    """The generator's own CPU, between the values it yields (not its consumer's)."""
    @functools.wraps(function)
    def measure(*args: Any, **kwargs: Any) -> Iterator[Any]:
        values = function(*args, **kwargs)
        while True:
            started = time.thread_time()
            try:
                value = next(values)
            except StopIteration:
                return
            finally:
                totals()[part] += time.thread_time() - started
            yield value
    return measure


def instrument(totals: Totals) -> None:
    """Wraps the worker's functions of each part; their CPU on the job's thread adds up in totals()."""
    from app.outputs import DirectoryOutputStore, RedisOutputStore
    from app.previews import Previews
    from tasks.generate import Execution
    from workers.comfyui.client import ComfyUIClient
    from workers.comfyui.stream import EventStream
    EventStream.follow = timed_generator(EventStream.follow, "websocket decode", totals)
    for owner, name, part in ((EventStream, "open", "websocket decode"), (EventStream, "close", "websocket decode"),
                              (Previews, "save", "previews"), (Execution, "write_progress", "progress writes"),
                              (ComfyUIClient, "download", "download and store"),
                              (RedisOutputStore, "save", "download and store"),
                              (DirectoryOutputStore, "save", "download and store")):
        setattr(owner, name, timed(getattr(owner, name), part, totals))


def parts_worker(parts_file: Path, argv: list[str]) -> None:
    """The GPU worker, instrumented: one JSON line per job into parts_file, its job thread's CPU seconds by part
    and in all ("job thread")."""
    from workers.__main__ import main as worker_main
    local = threading.local()
    instrument(lambda: local.totals)

    def started(**_: Any) -> None:
        local.totals, local.started = Counter(), time.thread_time()

    def ended(**_: Any) -> None:
        with parts_file.open("a") as out:
            out.write(json.dumps({**local.totals, "job thread": time.thread_time() - local.started}) + "\n")

    task_prerun.connect(started, weak=False)
    task_postrun.connect(ended, weak=False)
    worker_main(argv)


class PartsWorker(WorkerProcess):
    def __init__(self, *args: Any, parts_file: Path, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.parts_file = parts_file

    def command(self) -> list[str]:
        worker_options = super().command()[3:]  # after `python -m workers`
        return [sys.executable, "-m", "bench.worker_cost", "--parts", str(self.parts_file), *worker_options]


def job_parts(stack: Stack, web: str, results: Any, jobs: int) -> dict[str, float]:
    """CPU seconds per job of the instrumented worker, on the same simulator: its job thread's by part and in all
    ("job thread"), and its whole process's beyond the idle baseline ("process")."""
    sim = stack.simulators[0]
    parts_file = stack.root / f"parts-{time.monotonic_ns()}.jsonl"
    stack.workers.pop().stop()
    stack.workers.append(PartsWorker(stack.core, sim.url, 0, stack.root, parts_file=parts_file).start())
    job_costs(stack, web, results, jobs=2)  # warm-up
    process = job_costs(stack, web, results, jobs)["cpu"]
    rows = [json.loads(line) for line in parts_file.read_text().splitlines()][2:]
    parts = {part: statistics.mean(row.get(part, 0.0) for row in rows) for part in {p for row in rows for p in row}}
    return {**parts, "process": process}


# --- figure 12

def breakdown(parts: dict[str, float]) -> dict[str, float]:
    """Milliseconds per job by part of the instrumented worker; the rest of its job thread, and its process beyond
    the job thread (Celery's consumer taking the task and sending its events, the lease keeper), make its total."""
    thread, process = parts["job thread"], parts["process"]
    named = {part: seconds for part, seconds in sorted(parts.items()) if part not in ("job thread", "process")}
    return {**{part: ms(seconds) for part, seconds in named.items()},
            "rest of the job thread (task start, records, lease, submit, checks, result, clean-up)":
            ms(thread - sum(named.values())), "other threads (Celery consumer, lease keeper)": ms(process - thread)}


def worker_cpu_per_job(stack: Stack) -> Figure:
    """CPU of the worker process per job of 20 steps (STEP_SECONDS each), previews on, one 1 MB PNG, beyond what
    it spends idle over the same wall time; and where it goes."""
    sim = stack.gpus(1, step_seconds=STEP_SECONDS, noise=1.0)[0]
    sim.set(previews=True)
    web = stack.start_web()
    results = redis.Redis.from_url(stack.redis.url).pubsub()
    results.psubscribe("celery-task-meta-*")
    job_costs(stack, web, results, jobs=2)  # warm-up: imports, connections, scripts loaded
    cost = job_costs(stack, web, results, JOBS)
    parts = breakdown(job_parts(stack, web, results, jobs=6))
    results.close()
    value = ms(cost["cpu"])
    return {"figure": "16. worker CPU per job (20 steps, previews, one 1 MB PNG; idle baseline subtracted)",
            "value": value, "unit": "ms", "target": "<= 50 ms", "ok": value <= 50, "breakdown_ms": parts,
            "limit": f"idle baseline {ms(cost['baseline'])} ms over a job's {cost['wall']:.2f} s "
                     f"({ms(cost['rate'])} ms/s); {cost['writes']:.1f} progress writes per job; by part (the "
                     f"instrumented worker, in all {round(sum(parts.values()), 2)} ms): "
                     + "; ".join(f"{name} {value} ms" for name, value in parts.items()),
            "ratio": round(value / 50, 2)}


# --- figure 13

def follow_to_success(ws: websocket.WebSocket, prompt_id: str) -> dict[str, Any]:
    """The first image the prompt's `executed` messages name, once `execution_success` (or `executing null`)
    has come."""
    images: list[dict[str, Any]] = []
    while True:
        message = ws.recv()
        if not isinstance(message, str):
            continue
        frame = json.loads(message)
        data = frame.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            continue
        if frame["type"] == "executed":
            images += data["output"].get("images", [])
        if frame["type"] == "execution_success" or (frame["type"] == "executing" and data.get("node") is None):
            return images[0]


def answer(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> bytes:
    """The whole body of a 200 answer to one request (a JSON body, if any)."""
    connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, (response.status, data[:200])
    return data


def bare_completion(sim: SimulatorProcess, prompt_id: str) -> float:
    """One prompt through a bare script (websocket-client, the standard library's HTTP on one kept-alive
    connection): submit, follow, download the image; returns when the download was read in full (time.time())."""
    address = urlsplit(sim.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    ws = websocket.create_connection(f"ws://{address.netloc}/ws?clientId={prompt_id}")
    try:
        graph = template_graph({**JOB, "steps": 1}, prompt_id)
        answer(connection, "POST", "/prompt",
               json.dumps({"prompt": graph, "client_id": prompt_id, "prompt_id": prompt_id}).encode())
        image = follow_to_success(ws, prompt_id)
        data = answer(connection, "GET", "/view?" + urlencode({key: image[key]
                                                                for key in ("filename", "subfolder", "type")}))
        assert len(data) > 500_000, len(data)
        return time.time()
    finally:
        ws.close()
        connection.close()


def bare_latencies(sim: SimulatorProcess, jobs: int) -> list[float]:
    """Seconds from the simulator's done event to the image downloaded, for `jobs` prompts of the bare script."""
    downloaded = {}
    for _ in range(jobs):
        prompt_id = str(uuid.uuid4())
        downloaded[prompt_id] = bare_completion(sim, prompt_id)
    done = {e["prompt_id"]: e["t"] for e in sim.events("done")}
    return [at - done[prompt_id] for prompt_id, at in downloaded.items()]


def completion_overhead(stack: Stack, jobs: int = 30) -> Figure:
    """Figure 2's p50, minus the p50 of a bare websocket-client script run right after it on the same
    simulator (no Celery, no Redis): what the queue adds to the end of a job."""
    worker = completion_latency(stack, jobs)
    bare = bare_latencies(stack.simulators[0], jobs)
    bare_p50 = ms(statistics.median(bare))
    value = round(worker["value"] - bare_p50, 2)
    return {"figure": "17. completion over the bare client (figure 2 p50 minus a bare script's done -> image read)",
            "value": value, "unit": "ms", "target": "<= 10 ms", "ok": value <= 10,
            "limit": f"figure 2 p50 {worker['value']} ms (p95 {worker['p95']} ms); bare websocket-client script "
                     f"p50 {bare_p50} ms (p95 {ms(pct(bare, 0.95))} ms) on the same simulator; {worker['limit']}",
            "ratio": round(value / 10, 2)}


FIGURES: dict[str, Callable[[Stack], Figure]] = {measure.__name__: measure
                                                 for measure in (worker_cpu_per_job, completion_overhead)}


def main(names: list[str]) -> None:
    stack = Stack()
    try:
        for name in names or FIGURES:
            print(json.dumps(FIGURES[name](stack), indent=1), flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--parts"]:
        parts_worker(Path(sys.argv[2]), sys.argv[3:])
    else:
        main(sys.argv[1:])
