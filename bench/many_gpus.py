"""Figure 15 (issue 18, "Many GPUs"): figure 5's scaling run (16 jobs of 0.5 s per GPU) at up to 32 simulated
GPUs on this one machine, with where the machine's CPU goes during each run (per process group, from /proc); then,
on the largest fleet, jobs eight times as long (the same fleet at an eighth of the CPU a second: whether it is the
fleet or the machine's cores that stops 0.5 s jobs), and what the fleet costs doing nothing: each worker's and each
simulator's idle CPU and RSS. Each run's jobs arrive as a campaign does, in one POST /api/jobs/batch: posting them
one by one from this process would take cores from the fleet it measures (figures 8 and 11 measure posting).

`python -m bench.many_gpus` prints it."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.figures import Figure, finished, poll_until, post_batch, prompt_runs
from bench.stack import Stack
from bench.worker_cost import cpu_seconds
from testkit.processes import ChildProcess

STEP_SECONDS = 0.05
STEPS, LONG_STEPS = 10, 80  # a 0.5 s job, as in figure 5, and a 4 s one
LONG_JOBS_PER_GPU = 4
TARGET = 0.95
SETTLE = 3.0  # seconds after the last job before the idle window: the jobs' ends (acks, events) are done
IDLE_SECONDS = 10.0
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2 ** 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # of /proc/stat


# --- CPU and memory, from /proc

def pid_of(process: ChildProcess) -> int:
    assert process.process is not None
    return process.process.pid


def process_groups(stack: Stack) -> dict[str, list[int]]:
    """The stack's processes by role; `bench` is this process, which posts and polls the jobs."""
    return {"workers": [pid_of(w) for w in stack.workers], "simulators": [pid_of(s) for s in stack.simulators],
            "redis": [pid_of(stack.redis)], "web": stack.web_pids(), "bench": [os.getpid()]}


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (the `cpu` line of /proc/stat, idle and iowait out)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """The process's resident set now (/proc/<pid>/statm), in MB."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB


class CpuWindow:
    """The CPU seconds each group's processes, and the whole machine, spend between start() and stop()."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.started = self.wall = self.machine = 0.0
        self.before: dict[int, float] = {}
        self.used: dict[int, float] = {}

    def start(self) -> None:
        self.before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        self.machine, self.started = machine_busy_seconds(), time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self.started
        self.machine = machine_busy_seconds() - self.machine
        self.used = {pid: cpu_seconds(pid) - cpu for pid, cpu in self.before.items()}

    def seconds(self) -> dict[str, float]:
        """CPU seconds by group; `other` is the rest of the machine's busy time (processes not in the stack)."""
        by_group = {name: sum(self.used[pid] for pid in pids) for name, pids in self.groups.items()}
        return {**by_group, "other": self.machine - sum(by_group.values())}

    def percent_of_core(self, group: str) -> list[float]:
        return [100 * self.used[pid] / self.wall for pid in self.groups[group]]


# --- one run

@dataclass
class Run:
    """One scaling run: when its jobs were posted and ran on each GPU, and the CPU each process group spent."""

    job_seconds: float  # what a job takes on its GPU
    jobs: int
    started: float  # the first POST
    posted: float  # the last POST returned
    last: float  # the last job's finished_at
    prompts: list[list[tuple[float, float]]]  # each GPU's prompt runs (start, end), in order
    window: CpuWindow  # from the first POST until the last job posted had finished

    @property
    def gpus(self) -> int:
        return len(self.prompts)

    @property
    def makespan(self) -> float:
        return self.last - self.started

    def efficiency(self) -> float:
        """Ideal / measured makespan."""
        return round(self.jobs / self.gpus * self.job_seconds / self.makespan, 3)

    def share(self, seconds: float) -> float:
        """GPU seconds as a share of all the GPUs' makespan."""
        return round(seconds / (self.gpus * self.makespan), 3)

    def busy(self) -> float:
        return self.share(sum(end - start for runs in self.prompts for start, end in runs))

    def between_prompts(self) -> float:
        """The share the GPUs sat idle between two of their prompts (not before the first, nor after the last)."""
        return self.share(sum(b[0] - a[1] for runs in self.prompts for a, b in zip(runs, runs[1:])))

    def cores(self) -> dict[str, float]:
        return {name: round(seconds / self.window.wall, 2) for name, seconds in self.window.seconds().items()}

    def ms_per_job(self) -> dict[str, float]:
        """The stack's CPU per job, by group (`other` left out: it is not the stack's)."""
        return {name: round(1000 * seconds / self.jobs, 1) for name, seconds in self.window.seconds().items()
                if name != "other"}

    def cores_needed(self) -> float:
        """The cores this run's GPUs would need, all busy all the time, at this run's CPU per job."""
        return self.gpus / self.job_seconds * sum(self.ms_per_job().values()) / 1000

    def gpus_hostable(self) -> float:
        """How many GPUs of this run's jobs this machine's cores could feed at this run's CPU per job."""
        return self.gpus * (os.cpu_count() or 1) / self.cores_needed()

    def summary(self) -> str:
        counts = [len(runs) for runs in self.prompts]
        first_starts = [runs[0][0] - self.started for runs in self.prompts if runs]
        took = statistics.median(end - start for runs in self.prompts for start, end in runs)
        return (f"{self.efficiency()} (GPUs busy {self.busy()}, idle between prompts {self.between_prompts()}; "
                f"a {self.job_seconds:g} s job took {took:.3f} s; posting took {self.posted - self.started:.1f} s, "
                f"the last GPU's first prompt began at {max(first_starts):.2f} s; {min(counts)}-{max(counts)} jobs "
                f"a GPU)")

    def figures(self) -> dict[str, Any]:
        return {"efficiency": self.efficiency(), "gpu_busy_share": self.busy(),
                "idle_between_prompts": self.between_prompts(), "makespan": round(self.makespan, 2),
                "posting_seconds": round(self.posted - self.started, 2), "busy_cores": self.cores(),
                "cpu_ms_per_job": self.ms_per_job()}


def scaling_run(stack: Stack, jobs_per_gpu: int, steps: int) -> Run:
    """Figure 5's run on the stack's GPUs, jobs of `steps` steps. The CPU window ends when the last job posted has
    finished; the other jobs' end times are read after it, so that those reads are not in it."""
    web = stack.start_web()
    window = CpuWindow(process_groups(stack))
    window.start()
    started = time.time()
    ids = post_batch(web, len(stack.simulators) * jobs_per_gpu, steps=steps)
    posted = time.time()
    poll_until(web, ids[-1], finished, every=0.1, timeout=300)
    window.stop()
    last = max(poll_until(web, job_id, finished, every=0.1, timeout=300)[0]["finished_at"] for job_id in ids)
    prompts = [[run for run in prompt_runs(sim) if run[0] >= started] for sim in stack.simulators]
    return Run(steps * STEP_SECONDS, len(ids), started, posted, last, prompts, window)


# --- the idle fleet

def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "sum": round(sum(values), 2)}


def idle_costs(stack: Stack) -> dict[str, dict[str, float]]:
    """Each worker's and simulator's CPU (percent of one core) over IDLE_SECONDS with no job, and their RSS; Redis's
    CPU meanwhile (the fleet's idle loops ask it)."""
    time.sleep(SETTLE)
    window = CpuWindow(process_groups(stack))
    window.start()
    time.sleep(IDLE_SECONDS)
    window.stop()
    pids = window.groups
    return {"worker_cpu_pct": spread(window.percent_of_core("workers")),
            "worker_rss_mb": spread([rss_mb(pid) for pid in pids["workers"]]),
            "simulator_cpu_pct": spread(window.percent_of_core("simulators")),
            "simulator_rss_mb": spread([rss_mb(pid) for pid in pids["simulators"]]),
            "redis_cpu_pct": spread(window.percent_of_core("redis"))}


# --- the figure

def listed(values: dict[str, float], unit: str = "") -> str:
    return ", ".join(f"{name} {value}{unit}" for name, value in values.items())


def explain(runs: dict[int, Run], long: Run, idle: dict[str, dict[str, float]]) -> str:
    """The curve, where the largest run's CPU went, the capacity that implies, the long jobs' run beside it, and
    the idle fleet's cost."""
    largest = runs[max(runs)]
    per_job = largest.ms_per_job()
    return ("; ".join(f"{n} GPU: {run.summary()}" for n, run in runs.items()) +
            f". At {largest.gpus} GPUs the {os.cpu_count()} cores were busy {sum(largest.cores().values()):.2f} "
            f"({listed(largest.cores())}); one job cost {sum(per_job.values()):.0f} ms CPU "
            f"({listed(per_job, ' ms')}), so this machine feeds at most {largest.gpus_hostable():.0f} GPUs of "
            f"{largest.job_seconds:g} s jobs ({largest.gpus} need {largest.cores_needed():.1f} cores). The same "
            f"{long.gpus} GPUs with {long.job_seconds:g} s jobs (they need {long.cores_needed():.1f} cores): "
            f"{long.summary()}. Idle with {largest.gpus} up: a worker {idle['worker_cpu_pct']['median']}% of a "
            f"core and {idle['worker_rss_mb']['median']:.0f} MB, a simulator {idle['simulator_cpu_pct']['median']}%"
            f" and {idle['simulator_rss_mb']['median']:.0f} MB, Redis {idle['redis_cpu_pct']['median']}%")


def many_gpus(stack: Stack, sizes: tuple[int, ...] = (1, 8, 16, 32), jobs_per_gpu: int = 16) -> Figure:
    """Figure 5 at 1 to 32 simulated GPUs, every simulator and worker on this machine; then, on the largest fleet,
    LONG_JOBS_PER_GPU jobs eight times as long, and, with no job, what each worker and simulator costs idle."""
    runs: dict[int, Run] = {}
    start_seconds: dict[int, float] = {}
    for count in sizes:
        begun = time.monotonic()
        stack.gpus(count, step_seconds=STEP_SECONDS)
        start_seconds[count] = round(time.monotonic() - begun, 1)
        runs[count] = scaling_run(stack, jobs_per_gpu, STEPS)
    long = scaling_run(stack, LONG_JOBS_PER_GPU, LONG_STEPS)
    idle = idle_costs(stack)
    stack.stop_gpus()
    value = runs[sizes[-1]].efficiency()
    return {"figure": f"15. scaling efficiency at {sizes[-1]} simulated GPUs (ideal / measured makespan)",
            "value": value, "unit": "", "target": f">= {TARGET}", "ok": value >= TARGET,
            "by_gpus": {n: run.efficiency() for n, run in runs.items()},
            "gpu_busy_share": {n: run.busy() for n, run in runs.items()},
            "runs": {n: run.figures() for n, run in runs.items()}, "long_jobs": long.figures(),
            "start_seconds": start_seconds, "idle": idle, "limit": explain(runs, long, idle),
            "ratio": round(value / TARGET, 2)}


if __name__ == "__main__":
    bench_stack = Stack()
    try:
        print(many_gpus(bench_stack))
    finally:
        bench_stack.stop()
