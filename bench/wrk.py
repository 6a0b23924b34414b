"""The one load generator of the throughput figures: wrk, run as a child process, its report parsed."""
from __future__ import annotations

import re
import resource
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Load:
    """What one wrk run measured."""
    rate: float  # requests/s
    p99_ms: float
    errors: int  # socket errors (connect, read, write, timeout) and answers of status >= 400

    def describe(self) -> str:
        return f"{round(self.rate)} req/s, p99 {self.p99_ms} ms, {self.errors} errors"

    @staticmethod
    def mean(runs: list[Load]) -> Load:
        """Runs of the same length as one: their mean rate, the worst p99, every error."""
        return Load(sum(run.rate for run in runs) / len(runs), max(run.p99_ms for run in runs),
                    sum(run.errors for run in runs))


def wrk(url: str, connections: int, seconds: int, script: Path | None = None) -> Load:
    """`connections` keep-alive connections for `seconds` s on `url` (with a Lua script: on the paths it picks)."""
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
               *(["-s", str(script)] if script else []), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True,
                         preexec_fn=partial(_allow_connections, connections)).stdout
    return parse_wrk(out)


def _allow_connections(connections: int) -> None:
    """In wrk's process: a file descriptor for each connection, and some to spare."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256 if hard == resource.RLIM_INFINITY else min(connections + 256, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_wrk(out: str) -> Load:
    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M).group(1))
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", out, re.M).groups()
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    return Load(rate, round(float(value) * UNITS_MS[unit], 2), errors + (int(refused.group(1)) if refused else 0))
