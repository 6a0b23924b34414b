"""Counting what a fault did to jobs: lost (never ended), duplicated (a prompt run twice), time to recover."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.status import TERMINAL
from testkit.jobs import Jobs
from testkit.paths import TEST_OUTPUT
from testkit.services import SimulatorProcess
from testkit.waiting import poll

RESULTS: list["Row"] = []
TABLE_PATH = TEST_OUTPUT / "reliability.md"


@dataclass
class Row:
    scenario: str
    runs: int = 0
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    max_recover: float = 0.0
    states: dict[str, int] = field(default_factory=dict)


def finish(jobs: Jobs, job_ids: list[str], timeout: float) -> dict[str, dict]:
    """Wait for every job to end (up to timeout); returns the final statuses (non-terminal ones too)."""
    final: dict[str, dict] = {}

    def all_ended() -> bool:
        for job_id in [j for j in job_ids if j not in final]:
            status = jobs.status(job_id)
            if status is not None and status["state"] in TERMINAL:
                final[job_id] = status
        return len(final) == len(job_ids)

    poll(all_ended, timeout, interval=0.05)
    for job_id in job_ids:
        final.setdefault(job_id, jobs.status(job_id) or {"state": "UNKNOWN"})
    return final


def prompts_per_job(simulators: list[SimulatorProcess], job_ids: list[str]) -> dict[str, int]:
    """How many times each job's prompt was posted, over all simulators."""
    posted = Counter(post.get("prompt_id") for sim in simulators for post in sim.posts("/prompt"))
    return {job_id: posted[job_id] for job_id in job_ids}


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
