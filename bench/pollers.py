"""Issue 18, many pollers: 1,000 concurrent HTTP pollers (wrk, 1,000 keep-alive connections) of one running job
(figure 13) and of 1,000 different jobs, one running and the rest queued (figure 14: the status cache's worst case),
each beside the constant endpoint /healthz of the same server under the same 1,000 connections.

Run alone:
    .venv/bin/python -c "from bench.stack import Stack; from bench.pollers import one_job_pollers, many_jobs_pollers;
    s = Stack(); print(one_job_pollers(s)); print(many_jobs_pollers(s)); s.stop()"
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import requests

from bench.figures import Figure, poll_until, post_batch, post_job
from bench.stack import Stack
from bench.wrk import Load, wrk

POLLERS = 1000
SECONDS = 4  # of load per wrk run; six runs a figure
STEPS = 150  # the most a job may have (MAX_STEPS): 150 x 0.3 s, it runs for 45 s, through every run of a figure
STEP_SECONDS = 0.3
TARGET_RATIO = 0.9


def side_by_side(polls: Callable[[], Load], bare: Callable[[], Load]) -> tuple[Load, Load]:
    """Each measured three times, in the order polls, bare, bare, polls, polls, bare: a drift in the load others
    put on a shared machine weighs on both alike, and one run's noise (a 4 s run on 2 busy cores varies by 10%)
    weighs a third."""
    runs = [(measure, measure()) for measure in (polls, bare, bare, polls, polls, bare)]
    return (Load.mean([load for measure, load in runs if measure is polls]),
            Load.mean([load for measure, load in runs if measure is bare]))


def load(url: str, script: Path | None = None) -> Load:
    """POLLERS connections for SECONDS s."""
    return wrk(url, POLLERS, SECONDS, script)


def paths_script(script: Path, paths: list[str]) -> Path:
    """Writes a wrk Lua script whose connections take the paths in turn, one per request."""
    listed = ",\n".join(f'"{path}"' for path in paths)
    script.write_text(f"local paths = {{\n{listed}\n}}\nlocal n = 0\n"
                      "request = function()\n  n = n % #paths + 1\n  return wrk.format(\"GET\", paths[n])\nend\n")
    return script


def running(status: dict) -> bool:
    return status["state"] == "PROGRESS" and status["progress"]["value"] >= 1


def one_job_pollers(stack: Stack) -> Figure:
    """1,000 pollers of one running job, beside /healthz with the same 1,000 connections."""
    stack.gpus(1, step_seconds=STEP_SECONDS)
    web = stack.start_web()
    job_id, _ = post_job(web, steps=STEPS)
    poll_until(web, job_id, running)
    polls, bare = side_by_side(partial(load, f"{web}/api/jobs/{job_id}"), partial(load, f"{web}/healthz"))
    still_running = running(requests.get(f"{web}/api/jobs/{job_id}", timeout=10).json())
    requests.delete(f"{web}/api/jobs/{job_id}", timeout=10)
    title = f"13. status throughput, {POLLERS:,} pollers of one running job (GET /api/jobs/<id>)"
    return _figure(title, polls, bare, still_running, TARGET_RATIO)


def many_jobs_pollers(stack: Stack) -> Figure:
    """1,000 pollers each polling 1,000 different jobs in turn (one running, the others queued behind it: a queued
    job's status is read from Redis at every poll), beside /healthz polled the same way."""
    stack.gpus(1, step_seconds=STEP_SECONDS)
    web = stack.start_web()
    ids = post_batch(web, POLLERS, steps=STEPS)
    poll_until(web, ids[0], running)
    jobs_script = paths_script(stack.root / "jobs.lua", [f"/api/jobs/{job_id}" for job_id in ids])
    bare_script = paths_script(stack.root / "healthz.lua", ["/healthz"])
    polls, bare = side_by_side(partial(load, web, jobs_script), partial(load, web, bare_script))
    still_running = running(requests.get(f"{web}/api/jobs/{ids[0]}", timeout=10).json())
    cancel_all(web, ids)
    title = f"14. status throughput, {POLLERS:,} pollers over {len(ids):,} jobs (1 running, the rest queued)"
    return _figure(title, polls, bare, still_running, target_ratio=None)


def cancel_all(web: str, ids: list[str]) -> None:
    """Nothing of the figure is left to run on the next figure's GPUs."""
    with requests.Session() as session:
        for job_id in ids:
            session.delete(f"{web}/api/jobs/{job_id}", timeout=10).raise_for_status()


def _figure(title: str, polls: Load, bare: Load, still_running: bool, target_ratio: float | None) -> Figure:
    """target_ratio: of the polls' rate to the constant endpoint's, if any (no errors is always a target)."""
    ratio = round(polls.rate / bare.rate, 2)
    return {"figure": title, "value": round(polls.rate), "unit": "req/s", "p99_ms": polls.p99_ms,
            "errors": polls.errors,
            "target": (f"ratio >= {target_ratio}, " if target_ratio else "") + "no errors",
            "ok": ratio >= (target_ratio or 0) and polls.errors == bare.errors == 0 and still_running,
            "limit": f"constant endpoint (/healthz, same {POLLERS:,} connections) {bare.describe()}; "
                     f"ours p99 {polls.p99_ms} ms, {polls.errors} errors"
                     + ("" if still_running else "; the polled job was no longer running: not a valid run"),
            "ratio": ratio}
