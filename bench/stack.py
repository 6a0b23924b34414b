"""The system under measurement: Redis, simulators, GPU workers and gunicorn, started fresh on free ports."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from comfysim.process import SimulatorProcess, free_port
from tests.services import ROOT, RedisServer, WorkerProcess

SETTINGS = {"WORKER_HEARTBEAT": "1", "COMFYUI_RETRIES": "1", "PROGRESS_INTERVAL": "0.1"}


class Stack:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="t2i-bench-"))
        self.redis = RedisServer(self.root / "redis", fsync="everysec").start()  # as scripts/redis-server.sh
        os.environ.update({"REDIS_URL": self.redis.url, **SETTINGS})
        self.env = {"REDIS_URL": self.redis.url, **SETTINGS}
        self.simulators: list[SimulatorProcess] = []
        self.workers: list[WorkerProcess] = []
        self.webs: dict[tuple[tuple[str, str], ...], tuple[subprocess.Popen[bytes], str]] = {}

    def gpus(self, count: int, **sim_settings: Any) -> list[SimulatorProcess]:
        """(Re)start `count` simulators with one worker each."""
        self.stop_gpus()
        for gpu in range(count):
            sim = SimulatorProcess(self.root / f"sim{gpu}-{time.monotonic_ns()}", previews=False, log_events=True,
                                   **sim_settings).start()
            self.simulators.append(sim)
            self.workers.append(WorkerProcess(sim.url, gpu, self.root, self.env).start())
        return self.simulators

    def stop_gpus(self) -> None:
        for worker in self.workers:
            worker.stop()
        for sim in self.simulators:
            sim.stop()
        self.workers, self.simulators = [], []

    def start_web(self, **settings: str) -> str:
        """gunicorn serving the web tier with these extra environment settings (started once per settings; later
        calls return its URL)."""
        key = tuple(sorted(settings.items()))
        if key in self.webs:
            return self.webs[key][1]
        port = free_port()
        # The Procfile's own web command, so the figures measure the configuration `make run` deploys.
        command = next(line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines()
                       if line.startswith("web:"))
        process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT,
                                   env={**os.environ, **settings, "PYTHONPATH": str(ROOT), "WEB_PORT": str(port),
                                        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        self.webs[key] = (process, url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    return url
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError("gunicorn did not start")

    def web_pids(self) -> list[int]:
        """The default web tier's gunicorn master and its workers."""
        master = self.webs[()][0].pid
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return [master, *map(int, children)]

    def stop(self) -> None:
        self.stop_gpus()
        for process, _ in self.webs.values():
            process.terminate()
            process.wait(10)
        self.redis.stop()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
