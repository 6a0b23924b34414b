"""The system under measurement: Redis, simulators, GPU workers and gunicorn, started fresh on free ports."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from app.celery_app import create_celery
from app.settings import Settings
from testkit.processes import ChildProcess
from testkit.services import GunicornWeb, RedisServer, SimulatorProcess, WorkerProcess
from testkit.waiting import eventually

SETTINGS = {"WORKER_HEARTBEAT": "1", "COMFYUI_RETRIES": "1", "PROGRESS_INTERVAL": "0.1"}
START_TIMEOUT = 180.0  # seconds for 32 workers starting at once on 2 cores


def all_ready(processes: Sequence[ChildProcess]) -> None:
    """Waits for processes started with start(wait=False): they get ready side by side, each wait is short."""
    for process in processes:
        process.wait_ready(START_TIMEOUT)


class Stack:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="t2i-bench-"))
        self.redis = RedisServer(self.root / "redis", fsync="everysec").start()  # as scripts/redis-server.sh
        self.settings = Settings.from_env({"REDIS_URL": self.redis.url, **SETTINGS})
        self.core = create_celery(self.settings)
        self.simulators: list[SimulatorProcess] = []
        self.workers: list[WorkerProcess] = []
        self.webs: dict[tuple[tuple[str, str], ...], GunicornWeb] = {}

    def gpus(self, count: int, **sim_settings: Any) -> list[SimulatorProcess]:
        """(Re)start `count` simulators with one worker each: every simulator, then every worker, started before any
        is waited for (32 workers start in about the time their imports take on the machine's cores, not one after
        the other); then until every worker has published what its GPU runs, which it must before the dispatcher
        hands it a job."""
        self.stop_gpus()
        stamp = time.monotonic_ns()
        self.simulators = [SimulatorProcess(self.root / f"sim{gpu}-{stamp}", previews=False, log_events=True,
                                            **sim_settings).start(wait=False) for gpu in range(count)]
        all_ready(self.simulators)
        self.workers = [WorkerProcess(self.core, sim.url, gpu, self.root).start(wait=False)
                        for gpu, sim in enumerate(self.simulators)]
        all_ready(self.workers)
        eventually(lambda: all(self.core.fleet.capabilities(worker.name) for worker in self.workers), START_TIMEOUT)
        return self.simulators

    def stop_gpus(self) -> None:
        for worker in self.workers:
            worker.stop()
        for sim in self.simulators:
            sim.stop()
        self.workers, self.simulators = [], []

    def start_web(self, **settings: str) -> str:
        """gunicorn serving the web tier with these extra environment settings (started once per settings; later
        calls return its URL). It runs the Procfile's own web command, so the figures measure the configuration
        `make run` deploys."""
        key = tuple(sorted(settings.items()))
        if key not in self.webs:
            self.webs[key] = GunicornWeb(self.settings, self.root, **settings).start()
        return self.webs[key].url

    def web_pids(self) -> list[int]:
        """The default web tier's gunicorn master and its workers."""
        return self.webs[()].pids()

    def stop(self) -> None:
        self.stop_gpus()
        for web in self.webs.values():
            web.stop()
        self.redis.stop()
        shutil.rmtree(self.root, ignore_errors=True)  # the AOF of a run's images: hundreds of MB


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
