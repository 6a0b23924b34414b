"""python -m bench [--full] [figure ...]: run every figure (or the named ones, e.g. `scaling`), print the table; a
run of every figure also writes bench/results.json (bench/results-full.json with --full).

The quick run takes a few minutes. --full adds what takes longer: the deep backlog at 100,000 jobs (10,000 in the
quick run) and 32 simulated GPUs."""
from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.stack import Stack

RESULTS = Path(__file__).resolve().parent / "results.json"
FULL_RESULTS = Path(__file__).resolve().parent / "results-full.json"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))) / 2 ** 20
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}"


def measures(full: bool) -> list[Callable[[Stack], dict]]:
    """Every figure in the order it runs: the last ones leave jobs queued, with no GPU to run them."""
    from bench import backlog, figures, many_gpus, pollers, worker_cost
    return [figures.dispatch_latency, figures.completion_latency, worker_cost.completion_overhead,
            worker_cost.worker_cpu_per_job, figures.progress_freshness,
            figures.status_throughput, pollers.one_job_pollers, pollers.many_jobs_pollers, figures.memory,
            figures.gpu_idle_gap, figures.scaling, *([many_gpus.many_gpus] if full else []),
            figures.healthy_overhead, figures.recovery,
            named(backlog.deep_backlog, queued=100_000 if full else 10_000),
            figures.batch_enqueue, figures.enqueue_throughput]


def named(measure: Callable[..., dict], **options: Any) -> Callable[[Stack], dict]:
    """`measure` with these options, under its own name."""
    return functools.wraps(measure)(functools.partial(measure, **options))


def main(arguments: list[str]) -> None:
    full = "--full" in arguments
    names = [name for name in arguments if name != "--full"]
    order = measures(full)
    unknown = set(names) - {measure.__name__ for measure in order}
    if unknown:
        raise SystemExit(f"unknown figure(s) {sorted(unknown)}; choose from {[m.__name__ for m in order]}")
    selected = [measure for measure in order if not names or measure.__name__ in names]
    stack = Stack()
    rows = []
    started = time.monotonic()
    try:
        for measure in selected:
            print(f"measuring {measure.__name__} ...", file=sys.stderr, flush=True)
            rows.append(measure(stack))
    finally:
        stack.stop()
    rows.sort(key=lambda row: int(row["figure"].split(".")[0]))
    lines = [f"Machine: {machine()}; {'full' if full else 'quick'} run took {time.monotonic() - started:.0f} s", "",
             "| figure | measured | target | met | limit / beside it | ratio |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        extra = f" (p95 {row['p95']} ms)" if "p95" in row else ""
        lines.append(f"| {row['figure']} | {row['value']} {row['unit']}{extra} | {row['target']} | "
                     f"{'yes' if row['ok'] else 'no'} | {row['limit']} | {row['ratio']} |")
    table = "\n".join(lines)
    print(table)
    if selected == order:
        results = {"machine": machine(), "figures": rows, "table": table}
        (FULL_RESULTS if full else RESULTS).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
