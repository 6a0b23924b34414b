"""Each figure of the README's performance table, measured on a fresh stack beside the limit it is compared with."""
from __future__ import annotations

import json
import signal
import statistics
import time
from typing import Any, Callable

import redis
import requests
from celery.states import READY_STATES

from bench.dispatch_trace import Monitor, breakdown, segments
from bench.stack import Stack, peak_rss_mb
from bench.wrk import wrk
from testkit.jobs import template_graph
from testkit.services import SimulatorProcess
from testkit.waiting import eventually

Figure = dict[str, Any]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def post_job(web: str, **fields: Any) -> tuple[str, float]:
    response = requests.post(web + "/api/jobs", json={"width": 64, "height": 64, "steps": 1, "prompt": "bench",
                                                      **fields}, timeout=10)
    response.raise_for_status()
    return response.json()["id"], time.time()


def post_batch(web: str, count: int, **fields: Any) -> list[str]:
    """`count` jobs through POST /api/jobs/batch (1,000 a call); their ids in order."""
    job = {"width": 64, "height": 64, "steps": 1, "prompt": "bench", **fields}
    ids: list[str] = []
    while len(ids) < count:
        requests_left = [job] * min(1000, count - len(ids))
        response = requests.post(f"{web}/api/jobs/batch", json={"requests": requests_left}, timeout=60)
        response.raise_for_status()
        ids += [queued["id"] for queued in response.json()["jobs"]]
    return ids


def poll_until(web: str, job_id: str, done: Callable[[dict], bool], every: float = 0.002,
               timeout: float = 60) -> tuple[dict, float]:
    """The job's status once `done` holds for it, and when that poll was answered."""
    session = requests.Session()

    def reached() -> tuple[dict, float] | None:
        status = session.get(f"{web}/api/jobs/{job_id}", timeout=5).json()
        seen = time.time()
        return (status, seen) if done(status) else None

    return eventually(reached, timeout, lambda: f"job {job_id} not there within {timeout} s", interval=every)


def finished(status: dict) -> bool:
    return status["state"] in ("SUCCESS", "FAILURE", "CANCELLED")


def post_and_finish(web: str, jobs: int) -> dict[str, float]:
    """Posts `jobs` jobs one after the other, each once the one before has finished: job id -> POST returned."""
    returned = {}
    for _ in range(jobs):
        job_id, at = post_job(web)
        returned[job_id] = at
        poll_until(web, job_id, finished, every=0.005)
    return returned


def dispatch_latency(stack: Stack, jobs: int = 200, traced: int = 50) -> Figure:
    """Then `traced` more jobs under Redis's MONITOR, for the breakdown (bench/dispatch_trace.py)."""
    sim = stack.gpus(1, step_seconds=0.0)[0]
    web = stack.start_web()
    returned = post_and_finish(web, jobs)
    arrived = {r["prompt_id"]: r["t"] for r in sim.posts("/prompt")}
    latencies = [arrived[j] - t for j, t in returned.items() if j in arrived]
    with Monitor(stack.redis.url) as monitor:
        spent, late_sockets = segments(monitor, post_and_finish(web, traced), sim)
    bare = []
    for _ in range(50):
        started = time.time()
        requests.get(sim.url + "/prompt", timeout=5)
        bare.append(time.time() - started)
    p50 = ms(statistics.median(latencies))
    return {"figure": "1. dispatch latency p50 (POST /api/jobs returned -> ComfyUI got /prompt)", "value": p50,
            "unit": "ms", "target": "<= 4 ms", "ok": p50 <= 4, "p95": ms(pct(latencies, 0.95)),
            "breakdown_ms": {name: ms(statistics.median(v)) for name, v in spent.items() if v},
            "limit": f"bare HTTP round trip to ComfyUI {ms(statistics.median(bare))} ms; p50 ms under MONITOR, "
                     f"{len(spent['submit'])} jobs: {breakdown(spent)}; sockets opened during dispatch "
                     f"{late_sockets}", "ratio": round(p50 / 4, 2)}


def first_visible_success(web: str, job_id: str, results: Any, poller: requests.Session) -> tuple[dict, float]:
    """The moment a poller first sees SUCCESS: wait for Celery's result notification (the backend publishes every
    state it stores), then GET the job on the poller's kept-alive connection, as a polling page does; its answer
    time is the figure. A poller hammering the API every millisecond instead would take a core of this 2-core
    machine away from the worker it measures."""
    for message in results.listen():
        if message["type"] == "pmessage" and json.loads(message["data"]).get("status") in READY_STATES:
            if message["channel"].decode().endswith(job_id):
                break
    status = poller.get(f"{web}/api/jobs/{job_id}", timeout=5).json()
    return status, time.time()


def completion_latency(stack: Stack, jobs: int = 30) -> Figure:
    sim = stack.gpus(1, step_seconds=0.0, noise=1.0)[0]
    web = stack.start_web()
    results = redis.Redis.from_url(stack.redis.url).pubsub()
    results.psubscribe("celery-task-meta-*")
    latencies, sizes, poller = [], [], requests.Session()
    for _ in range(jobs):
        job_id, _ = post_job(web, width=584, height=584)
        status, seen = first_visible_success(web, job_id, results, poller)
        assert status["state"] == "SUCCESS" and status["images"][0]["url"], status
        done = [e["t"] for e in sim.events("done") if e["prompt_id"] == job_id]
        latencies.append(seen - done[0])
        sizes.append(status["images"][0]["size"])
    results.close()
    view = next(r["path"] for r in reversed(sim.requests_seen()) if r.get("path", "").startswith("/view"))
    fetches = []
    for _ in range(10):
        started = time.time()
        requests.get(sim.url + view, timeout=10).raise_for_status()
        fetches.append(time.time() - started)
    p50 = ms(statistics.median(latencies))
    return {"figure": "2. completion latency p50 (final `executing null` -> GET shows SUCCESS)", "value": p50,
            "unit": "ms", "target": "<= 25 ms", "ok": p50 <= 25, "p95": ms(pct(latencies, 0.95)),
            "limit": f"PNG size {statistics.median(sizes) / 1e6:.2f} MB; downloading it from ComfyUI alone takes "
                     f"{ms(statistics.median(fetches))} ms", "ratio": round(p50 / 25, 2)}


def prompt_runs(sim: Any) -> list[tuple[float, float]]:
    """(start, end) of every prompt the simulator ran, in order."""
    starts = sorted(e["t"] for e in sim.events("start"))
    ends = sorted(e["t"] for e in sim.events("done"))
    return list(zip(starts, ends))


def idle_gaps(sim: Any) -> tuple[list[float], float, float]:
    runs = prompt_runs(sim)
    gaps = [start - end for (_, end), (start, _) in zip(runs, runs[1:])]
    busy = sum(end - start for start, end in runs)
    return gaps, busy, runs[-1][1] - runs[0][0]


def gpu_idle_gap(stack: Stack, jobs: int = 100) -> Figure:
    steps, step_seconds = 10, 0.05  # 0.5 s of sampling per job
    sim = stack.gpus(1, step_seconds=step_seconds)[0]
    web = stack.start_web()
    ids = [post_job(web, steps=steps)[0] for _ in range(jobs)]
    for job_id in ids:
        poll_until(web, job_id, finished, every=0.05, timeout=300)
    gaps, busy, wall = idle_gaps(sim)
    # The limit: the same prompts posted straight into the simulator's own queue.
    stack.stop_gpus()
    direct = SimulatorProcess(stack.root / "direct", previews=False, log_events=True, step_seconds=step_seconds).start()
    try:
        for n in range(jobs):
            graph = template_graph({"prompt": "bench", "width": 64, "height": 64, "steps": steps, "seed": n},
                                   f"direct{n}")
            requests.post(direct.url + "/prompt", json={"prompt": graph}, timeout=5)
        eventually(lambda: len(direct.events("done")) >= jobs, timeout=300, interval=0.2)
        limit_gaps, limit_busy, limit_wall = idle_gaps(direct)
    finally:
        direct.stop()
    p50 = ms(statistics.median(gaps))
    return {"figure": "3. GPU idle gap p50 between prompts (backlog of 100 x 0.5 s jobs)", "value": p50, "unit": "ms",
            "target": "<= 5 ms", "ok": p50 <= 5, "p95": ms(pct(gaps, 0.95)),
            "utilisation": round(busy / wall, 3), "limit_utilisation": round(limit_busy / limit_wall, 3),
            "limit": f"ComfyUI's own queue: gap p50 {ms(statistics.median(limit_gaps))} ms, "
                     f"utilisation {limit_busy / limit_wall:.3f} (ours {busy / wall:.3f})",
            "ratio": round((busy / wall) / (limit_busy / limit_wall), 3)}


def progress_freshness(stack: Stack) -> Figure:
    sim = stack.gpus(1, step_seconds=0.2)[0]
    web = stack.start_web()
    job_id, _ = post_job(web, steps=20)
    seen: dict[int, float] = {}
    session = requests.Session()

    def note_steps_until_finished() -> bool:
        """Records when each step first shows in a poll."""
        status = session.get(f"{web}/api/jobs/{job_id}", timeout=5).json()
        now = time.time()
        value = (status.get("progress") or {}).get("value")
        if status["state"] == "PROGRESS" and value:
            seen.setdefault(value, now)
        return finished(status)

    eventually(note_steps_until_finished, timeout=60, interval=0.001)
    sent = {e["value"]: e["t"] for e in sim.events("progress") if e["prompt_id"] == job_id}
    latencies = [seen[v] - sent[v] for v in sent if v in seen]
    p50 = ms(statistics.median(latencies))
    return {"figure": "4. progress freshness p50 (ComfyUI `progress` -> visible in GET)", "value": p50, "unit": "ms",
            "target": "<= 20 ms", "ok": p50 <= 20, "p95": ms(pct(latencies, 0.95)),
            "limit": f"{len(latencies)} of 20 steps seen", "ratio": round(p50 / 20, 2)}


def scaling(stack: Stack, sizes: tuple[int, ...] = (1, 2, 4, 8), jobs_per_gpu: int = 16) -> Figure:
    job_seconds = 0.5
    results, busy, durations = {}, {}, {}
    for count in sizes:
        sims = stack.gpus(count, step_seconds=0.05)
        web = stack.start_web()
        started = time.time()
        ids = [post_job(web, steps=10)[0] for _ in range(count * jobs_per_gpu)]
        last = max(poll_until(web, job_id, finished, every=0.1, timeout=300)[0]["finished_at"] for job_id in ids)
        results[count] = round(jobs_per_gpu * job_seconds / (last - started), 3)
        runs = [runs for sim in sims for runs in prompt_runs(sim)]
        busy[count] = round(sum(end - start for start, end in runs) / (count * (last - started)), 3)
        durations[count] = round(statistics.median(end - start for start, end in runs), 3)
    return {"figure": "5. scaling efficiency at 8 simulated GPUs (ideal / measured makespan)",
            "value": results[sizes[-1]], "unit": "", "target": ">= 0.95", "ok": results[sizes[-1]] >= 0.95,
            "by_gpus": results, "gpu_busy_share": busy, "job_seconds_measured": durations,
            "limit": "; ".join(f"{n} GPU: {results[n]} (GPUs busy {busy[n]}, a 0.5 s job took {durations[n]} s)"
                               for n in sizes),
            "ratio": round(results[sizes[-1]] / 0.95, 2)}


def status_throughput(stack: Stack) -> Figure:
    """50 pollers on one running job (what pollers mostly read), beside a constant endpoint of the same server;
    a finished job's rate, and the running job's without the status cache, are shown too."""
    stack.gpus(1, step_seconds=0.2)
    web = stack.start_web()
    done, _ = post_job(web)
    poll_until(web, done, finished, every=0.01)
    running, _ = post_job(web, steps=150)
    poll_until(web, running, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 1)
    uncached_web = stack.start_web(STATUS_CACHE="0")
    polls = wrk(f"{web}/api/jobs/{running}", 50, 8)
    uncached = wrk(f"{uncached_web}/api/jobs/{running}", 50, 8)  # still running: 150 steps take 30 s
    bare = wrk(f"{web}/healthz", 50, 8)
    finished_job = wrk(f"{web}/api/jobs/{done}", 50, 8)
    requests.delete(f"{web}/api/jobs/{running}", timeout=5)
    ratio = round(polls.rate / bare.rate, 2)
    return {"figure": "6. status throughput, 50 pollers (GET /api/jobs/<id> of a running job)",
            "value": round(polls.rate), "unit": "req/s", "p99_ms": polls.p99_ms, "target": "ratio >= 0.6",
            "ok": ratio >= 0.6,
            "limit": f"constant endpoint {round(bare.rate)} req/s, p99 {bare.p99_ms} ms (ours p99 "
                     f"{polls.p99_ms} ms); a finished job {round(finished_job.rate)} req/s; without the status cache "
                     f"(STATUS_CACHE=0) {round(uncached.rate)} req/s", "ratio": ratio}


def memory(stack: Stack, jobs: int = 20) -> Figure:
    """Peak RSS after 20 jobs of two 1 MB PNGs each, every image fetched through the web tier (which has also
    served the status figure's load when run after it)."""
    stack.gpus(1, step_seconds=0.01, noise=1.0)
    web = stack.start_web()
    for _ in range(jobs):
        job_id, _ = post_job(web, width=584, height=584, batch_size=2)
        status, _ = poll_until(web, job_id, finished, every=0.01)
        for image in status["images"]:
            requests.get(web + image["url"], timeout=10).raise_for_status()
    worker = max(peak_rss_mb(w.process.pid) for w in stack.workers)
    web_rss = max(peak_rss_mb(pid) for pid in stack.web_pids())
    return {"figure": "7. peak RSS under load: worker / web process", "value": f"{worker:.0f} / {web_rss:.0f}",
            "unit": "MB", "target": "<= 120 / <= 100 MB", "ok": worker <= 120 and web_rss <= 100,
            "limit": f"{jobs} jobs x 2 images of 1 MB, each downloaded", "ratio": f"{worker / 120:.2f} / {web_rss / 100:.2f}"}


def enqueue_throughput(stack: Stack, seconds: float = 3.0) -> Figure:
    from app.client import Client
    stack.stop_gpus()
    client = Client(stack.settings)
    count, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        client.submit(prompt="bench", width=64, height=64, steps=1)
        count += 1
    rate = count / (time.monotonic() - started)
    return {"figure": "8. enqueue throughput from the Python client", "value": round(rate), "unit": "jobs/s",
            "target": "(none)", "ok": True, "limit": "-", "ratio": "-"}


def batch_enqueue(stack: Stack, seconds: float = 3.0, size: int = 1000) -> Figure:
    """Client.submit_many, batches of `size` jobs, beside Client.submit one by one measured just before in the same
    process and stack (no GPU: the jobs stay queued)."""
    from app.client import Client
    stack.stop_gpus()
    client = Client(stack.settings)
    request = {"prompt": "bench", "width": 64, "height": 64, "steps": 1}
    client.submit_many([request] * 10)  # connections made, scripts loaded
    count, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        client.submit(**request)
        count += 1
    one_by_one = count / (time.monotonic() - started)
    count, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        count += len(client.submit_many([request] * size))
    rate = count / (time.monotonic() - started)
    client.close()
    return {"figure": f"11. batch enqueue from one Python process (submit_many, {size:,} a call)",
            "value": round(rate), "unit": "jobs/s", "target": ">= 5000 jobs/s", "ok": rate >= 5000,
            "limit": f"one by one (submit) in the same run: {round(one_by_one)} jobs/s",
            "ratio": round(rate / 5000, 2)}


def recovery(stack: Stack, trials: int = 6) -> Figure:
    """kill -9 the worker of a sampling job (shipped LEASE_TTL and REAPER_INTERVAL; restarted at once in every
    other trial): seconds from the death to the job's prompt being followed again (the first request about the
    job any simulator gets after the death)."""
    sims = stack.gpus(2, step_seconds=0.05)
    web = stack.start_web()
    took = []
    for trial in range(trials):
        job_id, _ = post_job(web, steps=80)
        running, _ = poll_until(web, job_id, lambda s: s["state"] == "PROGRESS" and s["progress"]["value"] >= 3,
                                every=0.05)
        victim = next(w for w in stack.workers if w.name == running["worker"])
        victim.signal(signal.SIGKILL)
        died = time.time()
        victim.process.wait(10)
        if trial % 2 == 0:
            victim.start()
        final, _ = poll_until(web, job_id, finished, every=0.1, timeout=120)
        assert final["state"] == "SUCCESS", final
        took.append(min(r["t"] for sim in sims for r in sim.requests_about(job_id)  # requests, not prompt events
                        if "method" in r and r["t"] > died) - died)
        if trial % 2 == 1:
            victim.start()
    p50, worst = round(statistics.median(took), 1), round(max(took), 1)
    return {"figure": "9. recovery after kill -9 of a job's worker, p50 (death -> its prompt followed again)",
            "value": p50, "unit": "s", "target": "max <= 30 s", "ok": worst <= 30,
            "limit": f"max {worst} s over {trials} kills (half restarted at once); LEASE_TTL and REAPER_INTERVAL "
                     f"as shipped", "ratio": round(worst / 30, 2)}


def healthy_overhead(stack: Stack, jobs: int = 10) -> Figure:
    """Jobs of about 3 s on an idle GPU: the job's whole time (POST -> SUCCESS stored) beyond its prompt's run on
    ComfyUI. It covers the lease (taken, refreshed every LEASE_TTL/5 s by its own thread, ended), dispatch and
    completion."""
    sim = stack.gpus(1, step_seconds=0.1)[0]
    web = stack.start_web()
    added = []
    for _ in range(jobs):
        job_id, posted = post_job(web, steps=30)
        final, _ = poll_until(web, job_id, finished, every=0.05)
        start = next(e["t"] for e in sim.events("start") if e["prompt_id"] == job_id)
        done = next(e["t"] for e in sim.events("done") if e["prompt_id"] == job_id)
        added.append((final["finished_at"] - posted) - (done - start))
    p50 = ms(statistics.median(added))
    return {"figure": "10. added latency of a healthy 3 s job p50 (job time beyond the prompt's run)", "value": p50,
            "unit": "ms", "target": "< 1000 ms", "ok": max(added) < 1.0, "p95": ms(pct(added, 0.95)),
            "limit": f"max {ms(max(added))} ms over {jobs} jobs", "ratio": round(max(added), 2)}
