"""The soak: many jobs through several GPU workers while the simulators inject random faults.

In CI a small one runs as a test; the full one is a command:
    .venv/bin/python -m tests.reliability.soak --jobs 500 --workers 4
It checks every job ends in exactly one terminal state (none lost, no prompt run twice), and that once the
results have expired Redis holds no more keys than before the soak."""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import redis

from app.celery_app import create_celery
from app.settings import Settings
from testkit.jobs import Jobs
from testkit.services import RedisServer, SimulatorProcess, WorkerProcess
from testkit.waiting import poll
from tests.reliability.tally import finish, prompts_per_job

# Kept while the system runs, not per job: the dispatcher's clocks and counters (its per-client entries are gone
# once a client has nothing queued), what it knows of each worker, and the fleet's metric counts.
INFRASTRUCTURE = ("_kombu", "unacked", "t2i:worker", "t2i:ready", "t2i:reaper", "celery.pidbox", "celeryev",
                  "t2i:dispatch:", "t2i:metrics:")
FAULT_NODES = ("VAEDecode", "KSampler")


def job_keys(client: Any) -> set[str]:
    """Every key but the ones workers and Celery keep for themselves while they run."""
    return {key.decode() for key in client.keys("*") if not any(mark in key.decode() for mark in INFRASTRUCTURE)}


def shake(simulators: list[Any], rng: random.Random) -> None:
    """New random faults for every simulator."""
    for sim in simulators:
        sim.set(drop_ws_after=rng.choice([0, 0, rng.randint(4, 40)]),
                history_delay=rng.choice([0, 0, 0, 0.5]), view_delay=rng.choice([0, 0, 0.2]),
                fail_node=rng.choice(("",) * 18 + FAULT_NODES))


def run_soak(jobs: Jobs, job_count: int, simulators: list[Any], cancel_share: float = 0.05, seed: int = 0,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Submits `job_count` jobs through `jobs` (cancelling a share of them) and waits for them all to end."""
    rng = random.Random(seed)
    started = time.monotonic()
    job_ids: list[str] = []
    batch = max(4, len(simulators) * 3)
    while len(job_ids) < job_count:
        shake(simulators, rng)
        for _ in range(min(batch, job_count - len(job_ids))):
            job_ids.append(jobs.submit({"prompt": f"soak {len(job_ids)}", "width": 64, "height": 64,
                                        "steps": rng.randint(2, 12)})[0])
            if rng.random() < cancel_share:
                jobs.cancel(rng.choice(job_ids))
        time.sleep(0.5)  # the load's pace: each batch meets the faults shaken before it
    finals = finish(jobs, job_ids, timeout=max(120.0, job_count * 1.0))
    prompts = prompts_per_job(simulators, job_ids)
    states: dict[str, int] = {}
    for status in finals.values():
        states[status["state"]] = states.get(status["state"], 0) + 1
    summary = {"jobs": job_count, "seconds": round(time.monotonic() - started, 1), "states": states,
               "lost": [j for j, s in finals.items() if s["state"] not in ("SUCCESS", "FAILURE", "CANCELLED")],
               "duplicated": [j for j, count in prompts.items() if count > 1], "finals": finals, "prompts": prompts}
    log(f"soak: {job_count} jobs in {summary['seconds']} s: {states}, lost {len(summary['lost'])}, "
        f"duplicated {len(summary['duplicated'])}")
    return summary


def wait_for_baseline(client: Any, baseline: set[str], timeout: float) -> set[str]:
    """Keys left beyond the baseline once they had `timeout` seconds to expire."""
    left: set[str] = set()

    def settled() -> bool:
        nonlocal left
        left = job_keys(client) - baseline
        return not left

    poll(settled, timeout, interval=0.5)
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--expires", type=int, default=600,
                        help="RESULT_EXPIRES for the soak, seconds (longer than any job waits in the queue)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="t2i-soak-"))
    redis_server = RedisServer(root / "redis").start()
    core = create_celery(Settings.from_env(redis_url=redis_server.url, result_expires=args.expires, preview_ttl=3,
                                           worker_heartbeat=0.5, comfyui_retries=1))
    simulators = [SimulatorProcess(root / f"sim{n}", step_seconds=0.01, previews=True).start()
                  for n in range(args.workers)]
    workers = [WorkerProcess(core, sim.url, n, root).start() for n, sim in enumerate(simulators)]
    client = redis.Redis.from_url(redis_server.url)
    try:
        baseline = job_keys(client)
        before = client.info("memory")["used_memory"]
        summary = run_soak(Jobs(core), args.jobs, simulators)
        left = wait_for_baseline(client, baseline, args.expires + 30)
        after = client.info("memory")["used_memory"]
        print(f"redis used_memory: {before} bytes before, {after} after expiry; keys left: {len(left)}")
        print(f"lost: {summary['lost']}\nduplicated: {summary['duplicated']}")
    finally:
        for worker in workers:
            worker.stop()
        for sim in simulators:
            sim.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
