"""python -m bench [figure ...]: run every figure (or the named ones, e.g. `scaling`), print the table; a run of
every figure also writes bench/results.json."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from bench.stack import Stack

RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))) / 2 ** 20
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}"


def main(names: list[str]) -> None:
    from bench import figures
    order = [figures.dispatch_latency, figures.completion_latency, figures.progress_freshness,
             figures.status_throughput, figures.memory, figures.gpu_idle_gap, figures.scaling,
             figures.healthy_overhead, figures.recovery, figures.batch_enqueue,
             figures.enqueue_throughput]  # these two last: they leave their jobs queued, with no GPU to run them
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
    lines = [f"Machine: {machine()}; run took {time.monotonic() - started:.0f} s", "",
             "| figure | measured | target | met | limit / beside it | ratio |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        extra = f" (p95 {row['p95']} ms)" if "p95" in row else ""
        lines.append(f"| {row['figure']} | {row['value']} {row['unit']}{extra} | {row['target']} | "
                     f"{'yes' if row['ok'] else 'no'} | {row['limit']} | {row['ratio']} |")
    table = "\n".join(lines)
    print(table)
    if selected == order:
        RESULTS.write_text(json.dumps({"machine": machine(), "figures": rows, "table": table}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
