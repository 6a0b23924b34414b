"""Run a simulator as a child process on a free 127.0.0.1 port: for tests, benchmarks and scripts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SimulatorProcess:
    """`SimulatorProcess(data_dir, step_seconds=0.01, previews=False).start()`; settings are the CLI's flags."""

    def __init__(self, data_dir: str | Path, port: int | None = None, **settings: Any):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "comfysim.log"
        self.request_log = self.data_dir / "requests.jsonl"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "comfysim", "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--request-log", str(self.request_log)]
        for name, value in self.settings.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + name.replace("_", "-"))
            else:
                args += [flag, ",".join(value) if isinstance(value, (list, tuple)) else str(value)]
        return args

    def start(self, timeout: float = 15.0) -> "SimulatorProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.process.returncode}; see {self.log_path}")
            try:
                requests.get(self.url + "/system_stats", timeout=0.5)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"simulator on {self.url} did not answer within {timeout}s")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def set(self, **changes: Any) -> dict[str, Any]:
        """Change settings (faults, timing) of the running simulator."""
        response = requests.post(self.url + "/sim/settings", json=changes, timeout=5)
        response.raise_for_status()
        return response.json()

    def requests_seen(self) -> list[dict[str, Any]]:
        return requests.get(self.url + "/sim/requests", timeout=5).json()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Timestamped prompt events ("start", "done", "progress") logged with the log_events setting."""
        return [r for r in self.requests_seen() if r.get("event") == name]

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
