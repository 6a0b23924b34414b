"""What every launcher shares: free 127.0.0.1 ports, and a child process that logs to a file and is ready when
it says so."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import Self

from testkit.paths import ROOT
from testkit.waiting import eventually


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment (the project is installed in the venv: `make install`), plus `extra`."""
    return {**os.environ, **extra}


class ChildProcess:
    """A child process run from the repository, its output appended to `log_path`. Subclasses name the
    `command()`, any `environment()` of their own, and what `ready()` means."""

    label = "child process"
    start_timeout = 30.0

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def ready(self) -> bool:
        return True

    def start(self, wait: bool = True) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=ROOT, env=child_environment(self.environment()),
                                            stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        eventually(self._started, timeout or self.start_timeout, interval=0.05,
                   failure=lambda: f"{self.label} did not start; see {self.log_path}")

    def _started(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"{self.label} exited; see {self.log_path}")
        return self.ready()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def kill(self, sig: int = SIGKILL, timeout: float = 10.0) -> None:
        """Sends `sig` and waits for the process to exit (subprocess.TimeoutExpired if it does not)."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)
            self.process.wait(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        try:
            self.kill(SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            self.kill(SIGKILL)
        self.process = None

    def discard(self) -> None:
        """SIGKILL, for a test's teardown: how a process stops is tested where it matters, and a graceful stop
        waits for a running job (a GPU worker) or an event loop's next turn."""
        self.kill(SIGKILL)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
