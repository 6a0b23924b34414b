"""Counting what a fault did to jobs: lost (never ended), duplicated (a prompt run twice), time to recover."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from app.status import TERMINAL, job_status

RESULTS: list["Row"] = []
TABLE_PATH = Path(__file__).resolve().parents[2] / "test-output" / "reliability.md"


@dataclass
class Row:
    scenario: str
    runs: int = 0
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    max_recover: float = 0.0
    states: dict[str, int] = field(default_factory=dict)


def finish(job_ids: list[str], timeout: float) -> dict[str, dict]:
    """Wait for every job to end (up to timeout); returns the final statuses (non-terminal ones too)."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = job_status(job_id)
            if status is not None and status["state"] in TERMINAL:
                final[job_id] = status
                pending.remove(job_id)
        time.sleep(0.05)
    for job_id in pending:
        final[job_id] = job_status(job_id) or {"state": "UNKNOWN"}
    return final


def prompts_per_job(simulators, job_ids: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(job_ids, 0)
    for sim in simulators:
        for request in sim.requests_seen():
            if request.get("method") == "POST" and request.get("path") == "/prompt" and request.get("prompt_id") in counts:
                counts[request["prompt_id"]] += 1
    return counts


def record(scenario: str, finals: dict[str, dict], prompts: dict[str, int], recover: float, runs: int = 1) -> Row:
    row = next((r for r in RESULTS if r.scenario == scenario), None)
    if row is None:
        row = Row(scenario)
        RESULTS.append(row)
    row.runs += runs
    row.jobs += len(finals)
    row.lost += sum(1 for s in finals.values() if s["state"] not in TERMINAL)
    row.duplicated += sum(1 for count in prompts.values() if count > 1)
    row.max_recover = max(row.max_recover, recover)
    for status in finals.values():
        row.states[status["state"]] = row.states.get(status["state"], 0) + 1
    return row


def table() -> str:
    lines = ["| scenario | runs | jobs | lost | duplicated | max time to recover (s) | end states |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in RESULTS:
        states = ", ".join(f"{k} {v}" for k, v in sorted(row.states.items()))
        lines.append(f"| {row.scenario} | {row.runs} | {row.jobs} | {row.lost} | {row.duplicated} | "
                     f"{row.max_recover:.1f} | {states} |")
    return "\n".join(lines)
