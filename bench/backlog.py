"""Figure 12: a deep backlog. Submit and status latency with `queued` jobs waiting beside the same on an empty
queue, queue positions checked against the ready index's own contents, and what one job costs Redis: memory while
it is queued and once it has finished, and commands over its whole life."""
from __future__ import annotations

import json
import random
import re
import statistics
import time
from collections import Counter, defaultdict
from typing import Any, Callable

import redis
import requests
from redis.client import PubSub

from app.client import Client
from app.dispatch import QUEUE_INDEX, WAITING
from app.request import DEFAULT_PRIORITY
from bench.figures import Figure, ms
from bench.stack import Stack
from testkit.waiting import eventually

REQUEST = {"prompt": "bench", "width": 64, "height": 64, "steps": 1}
PROBE_PRIORITY = 0  # the probes' jobs: the newest queued job is also the last in dispatch order
FILL_PRIORITIES = (5, 7, 5, 2)  # the fill's mix, with its clients: positions interleave bands and fair shares
FILL_CLIENTS = ("alpha", "beta", "gamma")
BATCH = 1000  # Client.submit_many's most
SAMPLES_PER_KIND = 200  # keys of one kind whose MEMORY USAGE is read
WARMUP = 20  # untimed calls before a latency is timed
ROUNDS = 3
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BENCH_COMMANDS = {"config", "info"}  # what this figure itself sends while it counts commands
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
IMAGES = "t2i:out:"  # the output store's keys, left out of a finished job's memory
CLIENT_BUFFERS = "(client buffers)"


def p50_ms(call: Callable[[], None], times: int) -> float:
    """p50 of `times` calls made in ROUNDS rounds, after WARMUP untimed ones: the lowest round's, as other load on
    this machine comes in bursts."""
    for _ in range(WARMUP):
        call()
    return min(ms(statistics.median(timed(call, times // ROUNDS))) for _ in range(ROUNDS))


def timed(call: Callable[[], None], times: int) -> list[float]:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return took


def post_job(session: requests.Session, web: str, **fields: Any) -> str:
    response = session.post(web + "/api/jobs", json={**REQUEST, **fields}, timeout=10)
    response.raise_for_status()
    return response.json()["id"]


def latencies(session: requests.Session, web: str, submits: int, reads: int) -> dict[str, Any]:
    """p50 of POST /api/jobs (`submits` jobs, queued behind everything), then of GET /api/jobs/<id> of the newest
    one (`reads` times), and the position that status shows."""
    ids: list[str] = []
    submit = p50_ms(lambda: ids.append(post_job(session, web, priority=PROBE_PRIORITY)), submits)
    seen: dict[str, Any] = {}

    def read() -> None:
        response = session.get(f"{web}/api/jobs/{ids[-1]}", timeout=10)
        response.raise_for_status()
        seen.update(response.json())

    return {"submit_ms": submit, "status_ms": p50_ms(read, reads), "position": seen["queue"]["position"]}


def fill_request(n: int) -> dict[str, Any]:
    return {**REQUEST, "priority": FILL_PRIORITIES[n % len(FILL_PRIORITIES)],
            "client": FILL_CLIENTS[n % len(FILL_CLIENTS)]}


def fill(stack: Stack, count: int) -> float:
    """`count` jobs queued by Client.submit_many, BATCH a call; returns the jobs/s."""
    client = Client(stack.settings)
    started = time.monotonic()
    for first in range(0, count, BATCH):
        client.submit_many([fill_request(n) for n in range(first, min(count, first + BATCH))])
    rate = count / (time.monotonic() - started)
    client.close()
    return rate


def dispatch_order(r: redis.Redis) -> dict[str, tuple[int, int]]:
    """Each queued job's rank in dispatch order (1: next) and its band, worked out from the ready index's members
    as app/dispatch.py writes them, `{band}{start:015d}{seq:015d}:{job id}`: by band (9 - priority), then
    fair-share start, then arrival. Read with ZSCAN and sorted here: Redis's own ranking is not used."""
    members = (member.decode() for member, _ in r.zscan_iter(QUEUE_INDEX, count=5000))
    ordered = sorted((int(m[0]), int(m[1:16]), int(m[16:31]), m[32:]) for m in members)
    return {job: (rank, band) for rank, (band, _, _, job) in enumerate(ordered, 1)}


def wrong_positions(session: requests.Session, web: str, order: dict[str, tuple[int, int]],
                    sample: int) -> tuple[int, int]:
    """(wrong, checked): `sample` random queued jobs, the first and the last, each wrong unless its status's
    queue.position is its rank and its band is the one its request's priority gives."""
    ranked = sorted(order, key=lambda job: order[job][0])
    jobs = {ranked[0], ranked[-1], *random.Random(12).sample(ranked, min(sample, len(ranked)))}
    wrong = 0
    for job in jobs:
        status = session.get(f"{web}/api/jobs/{job}", timeout=10).json()
        rank, band = order[job]
        priority = status["request"].get("priority", DEFAULT_PRIORITY)
        wrong += status["queue"]["position"] != rank or band != 9 - priority
    return wrong, len(jobs)


def key_kind(key: bytes) -> str:
    return UUID.sub(b"{id}", key).decode(errors="replace")


def kind_bytes(r: redis.Redis, keys: list[bytes]) -> int:
    """MEMORY USAGE of every element (SAMPLES 0: a job's hash has one large field among small ones) of up to
    SAMPLES_PER_KIND keys of a kind, times how many there are."""
    pipe = r.pipeline(transaction=False)
    for key in random.Random(12).sample(keys, min(SAMPLES_PER_KIND, len(keys))):
        pipe.memory_usage(key, samples=0)
    sizes = [size or 0 for size in pipe.execute()]
    return round(statistics.mean(sizes) * len(keys))


def memory_by_kind(r: redis.Redis) -> dict[str, int]:
    """Bytes Redis holds under each kind of key (a job's id in its name replaced by {id}), beside the keyspace's
    own tables (which MEMORY USAGE leaves out) and the clients' buffers."""
    keys: dict[str, list[bytes]] = defaultdict(list)
    for key in r.scan_iter(count=5000):
        keys[key_kind(key)].append(key)
    stats = r.memory_stats()
    tables = stats.get("db.0", {})
    return {**{kind: kind_bytes(r, found) for kind, found in keys.items()},
            "(keyspace tables)": tables.get("overhead.hashtable.main", 0) + tables.get("overhead.hashtable.expires", 0),
            CLIENT_BUFFERS: stats["clients.normal"]}


def per_job(before: dict[str, int], after: dict[str, int], jobs: int) -> dict[str, int]:
    """Each kind's growth per job, largest first (those under 1 byte a job left out)."""
    grown = {kind: round((after.get(kind, 0) - before.get(kind, 0)) / jobs) for kind in {*before, *after}}
    return dict(sorted(((kind, size) for kind, size in grown.items() if size), key=lambda item: -item[1]))


def settled_used_memory(r: redis.Redis) -> int:
    """used_memory once what just ran has left the client buffers and no AOF rewrite is running: during one,
    Redis 6 keeps every write also in a rewrite buffer (after other figures' megabytes of images, one starts
    easily), which is not the jobs' memory."""
    time.sleep(1.0)  # the invalidations and replies of what just ran leave the client buffers
    eventually(lambda: not int(r.info("persistence").get("aof_rewrite_in_progress", 0)), timeout=120, interval=0.2)
    memory = r.info("memory")
    return int(memory["used_memory"]) - int(memory.get("mem_aof_buffer", 0))


def commandstats(r: redis.Redis) -> Counter[str]:
    """Calls of each command since the last CONFIG RESETSTAT, but this figure's own."""
    stats = r.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()
                    if name.removeprefix("cmdstat_") not in BENCH_COMMANDS})


def idle_commands(r: redis.Redis, seconds: float) -> Counter[str]:
    """What the idle system sends in `seconds` (heartbeats, the intake's and kombu's polls, cache pings)."""
    r.config_resetstat()
    time.sleep(seconds)
    return commandstats(r)


def run_jobs(session: requests.Session, web: str, results: PubSub, count: int) -> float:
    """POSTs `count` jobs and waits for each one's terminal state without a command to Redis (`results` hears
    each result published as it is stored); returns the seconds it took."""
    started = time.monotonic()
    pending = {post_job(session, web) for _ in range(count)}
    deadline = started + 30 + count
    while pending and time.monotonic() < deadline:
        message = results.get_message(timeout=1.0)
        if message and json.loads(message["data"]).get("status") in TERMINAL:
            pending.discard(message["channel"].decode().removeprefix("celery-task-meta-"))
    assert not pending, f"{len(pending)} of {count} jobs did not end"
    return time.monotonic() - started


def job_keys(r: redis.Redis, job_id: str) -> dict[str, int]:
    """The keys named after the job, each with its time to live (-1: none)."""
    return {key_kind(key): r.ttl(key) for key in r.scan_iter(match=f"*{job_id}*", count=5000)}


def finished_jobs(stack: Stack, r: redis.Redis, jobs: int, idle_seconds: float = 5.0) -> dict[str, Any]:
    """`jobs` jobs end to end through the web tier on one GPU: Redis memory per finished job (images left out),
    the growth of the kinds of key that hold it (MEMORY USAGE, and the keyspace's tables), not of used_memory:
    after other figures, what they left in Redis (expiring previews, buffers) moves used_memory by more than a
    job's few kilobytes; Redis commands per job, beyond what the idle system sends meanwhile."""
    stack.gpus(1, step_seconds=0.0)
    web = stack.start_web()
    session, results = requests.Session(), r.pubsub(ignore_subscribe_messages=True)
    results.psubscribe("celery-task-meta-*")
    run_jobs(session, web, results, 3)  # connections made, scripts loaded
    idle = idle_commands(r, idle_seconds)
    kinds = memory_by_kind(r)
    r.config_resetstat()
    took = run_jobs(session, web, results, jobs)
    busy = commandstats(r)
    results.close()
    grown = per_job(kinds, memory_by_kind(r), jobs)
    images = sum(size for kind, size in grown.items() if kind.startswith(IMAGES))
    net = {name: (busy[name] - idle[name] * took / idle_seconds) / jobs for name in {*busy, *idle}}
    newest = r.lindex("t2i:recent", 0).decode()
    own = {kind: size for kind, size in grown.items() if not kind.startswith(IMAGES)}
    return {"bytes": sum(size for kind, size in own.items() if kind != CLIENT_BUFFERS), "image_bytes": images,
            "kinds": own,
            "commands": round(sum(net.values()), 1),
            "top_commands": {name: round(calls, 1) for name, calls in sorted(net.items(), key=lambda c: -c[1])[:8]},
            "keys": job_keys(r, newest)}


def queued_memory(stack: Stack, r: redis.Redis, count: int) -> dict[str, Any]:
    """Fills the queue with `count` more jobs: Redis memory per queued job and the kinds of key that hold it."""
    memory, kinds = settled_used_memory(r), memory_by_kind(r)
    rate = fill(stack, count)
    return {"bytes": round((settled_used_memory(r) - memory) / count),
            "kinds": per_job(kinds, memory_by_kind(r), count), "fill_rate": round(rate)}


def top(sizes: dict[str, Any], n: int = 4) -> str:
    return ", ".join(f"{kind} {size}" for kind, size in list(sizes.items())[:n])


def summary(empty: dict[str, Any], full: dict[str, Any], wrong: int, checked: int, backlog: dict[str, Any],
            finished: dict[str, Any]) -> str:
    expiring = [kind for kind, ttl in finished["keys"].items() if ttl > 0]
    return (f"empty queue: submit {empty['submit_ms']} ms, status {empty['status_ms']} ms (position "
            f"{empty['position']}); backlog: submit {full['submit_ms']} ms, status {full['status_ms']} ms (position "
            f"{full['position']:,}); positions wrong: {wrong} of {checked}; Redis {backlog['bytes']} B a queued job "
            f"({top(backlog['kinds'])}), {finished['bytes']} B a finished job without its images "
            f"({top(finished['kinds'])}); {finished['commands']} commands a job from submit to its end (commandstats: "
            f"those its scripts run are counted too; {top(finished['top_commands'])}), and its writes leave "
            f"{len(expiring)} keys to expire, one deletion each, not counted ({', '.join(expiring)})")


def deep_backlog(stack: Stack, queued: int = 100_000) -> Figure:
    """Submit and status p50 (POST /api/jobs; GET /api/jobs/<id> of the newest job, last in dispatch order) with
    no GPU online, on an empty queue and again with `queued` jobs waiting (filled by Client.submit_many in a mix
    of priorities and clients); the positions of 200 random queued jobs, the first and the last, against their
    rank in dispatch order as the ready index's members give it; Redis memory per queued job (used_memory over
    the fill). Measured first, on one GPU and an empty queue: memory per finished job (its images left out), and
    commands per job from submit to its terminal write, beyond the idle system's own; the expiry of its keys is
    not waited for: the keys its writes leave to expire are listed instead."""
    r = redis.Redis.from_url(stack.redis.url)
    assert r.zcard(QUEUE_INDEX) == 0, "deep_backlog needs an empty queue: run it before figures that leave jobs queued"
    finished = finished_jobs(stack, r, jobs=200)
    stack.stop_gpus()
    eventually(lambda: r.zcard(WAITING) == 0, timeout=10)  # no job goes to a stopped worker's queue
    session, web = requests.Session(), stack.start_web()
    empty = latencies(session, web, submits=210, reads=510)
    backlog = queued_memory(stack, r, queued - r.zcard(QUEUE_INDEX))
    full = latencies(session, web, submits=210, reads=510)
    wrong, checked = wrong_positions(session, web, dispatch_order(r), sample=200)
    r.close()
    submit_ratio = round(full["submit_ms"] / empty["submit_ms"], 2)
    status_ratio = round(full["status_ms"] / empty["status_ms"], 2)
    return {"figure": f"12. deep backlog: submit / status p50 with {queued:,} queued, beside an empty queue",
            "value": f"{submit_ratio} / {status_ratio}", "unit": "x",
            "target": "<= 1.5 / <= 1.5 x; 0 wrong positions; <= 4096 B a queued job",
            "ok": max(submit_ratio, status_ratio) <= 1.5 and wrong == 0 and backlog["bytes"] <= 4096,
            "empty": empty, "full": full, "wrong_positions": wrong, "positions_checked": checked,
            "queued_job_bytes": backlog["bytes"], "queued_job_kinds": backlog["kinds"],
            "fill_rate": backlog["fill_rate"], "finished_job_bytes": finished["bytes"],
            "finished_job_image_bytes": finished["image_bytes"], "finished_job_kinds": finished["kinds"],
            "commands_per_job": finished["commands"], "top_commands": finished["top_commands"],
            "job_keys_ttl": finished["keys"], "limit": summary(empty, full, wrong, checked, backlog, finished),
            "ratio": round(max(submit_ratio / 1.5, status_ratio / 1.5, backlog["bytes"] / 4096), 2)}
