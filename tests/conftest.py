"""Fixtures shared by every test: a real redis-server, simulators and GPU workers as real processes."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from flask import Flask

from app.celery_app import Text2ImgCelery, create_celery
from app.client import Client
from app.settings import Settings
from testkit.jobs import Jobs
from testkit.services import (FlowerProcess, LiveServer, ReaperProcess, RedisServer, SimulatorProcess, WorkerProcess,
                              settings_env)
from web import create_app
from web.context import celery_app

# Settings of this process and of every process it starts, beside the test Redis's URL: heartbeats and hand-backs
# shortened (the tests that show a guarantee under the shipped defaults start their workers with those).
TEST_SETTINGS = {"WORKER_HEARTBEAT": "0.5", "COMFYUI_RETRIES": "1", "PROGRESS_INTERVAL": "0.1"}
_redis: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start one redis-server for the whole run."""
    global _redis
    _redis = RedisServer(Path(tempfile.mkdtemp(prefix="t2i-redis-"))).start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None:
        _redis.stop()
        shutil.rmtree(_redis.directory, ignore_errors=True)


@pytest.fixture
def redis_server() -> RedisServer:
    assert _redis is not None
    return _redis


@pytest.fixture(scope="session")
def settings() -> Settings:
    assert _redis is not None
    return Settings.from_env({**TEST_SETTINGS, "REDIS_URL": _redis.url})


@pytest.fixture(scope="session")
def core(settings: Settings) -> Iterator[Text2ImgCelery]:
    """The Celery app of this process, and with it the job records, statuses, outputs ... on the test Redis."""
    app = create_celery(settings)
    yield app
    app.close()


@pytest.fixture
def python_client(settings: Settings) -> Iterator[Client]:
    """The Python client for programs that share the Redis, on the test settings."""
    client = Client(settings)
    yield client
    client.close()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> redis.Redis:
    """An empty Redis for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    return client


@pytest.fixture
def jobs(core: Text2ImgCelery, clean_redis: redis.Redis) -> Jobs:
    """Submitting, cancelling, reading and waiting for jobs, on a clean Redis."""
    core.fleet.forget_known()  # the GPUs an earlier test's app read are gone with its Redis
    return Jobs(core)


@pytest.fixture
def start_worker(tmp_path: Path, core: Text2ImgCelery,
                 clean_redis: redis.Redis) -> Iterator[Callable[..., WorkerProcess]]:
    """start_worker(simulator, gpu=0, **settings) -> a running GPU worker bound to that simulator."""
    workers: list[WorkerProcess] = []

    def start(simulator: SimulatorProcess, gpu: int = 0, wait: bool = True, **settings: Any) -> WorkerProcess:
        worker = WorkerProcess(core, simulator.url, gpu, tmp_path, settings_env(**settings))
        workers.append(worker)
        return worker.start(wait=wait)

    yield start
    for worker in workers:
        worker.discard()


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """start_simulator(step_seconds=0.01, previews=False, ...) -> a running SimulatorProcess."""
    started: list[SimulatorProcess] = []

    def start(**settings: Any) -> SimulatorProcess:
        settings.setdefault("step_seconds", 0.01)
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", **settings).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.discard()


@pytest.fixture
def start_gpus(start_simulator: Callable[..., SimulatorProcess],
               start_worker: Callable[..., WorkerProcess]) -> Callable[..., list[SimulatorProcess]]:
    """start_gpus(count, worker_settings=None, **simulator_settings) -> `count` simulators, the Nth served by the
    GPU worker gpuN."""

    def start(count: int, worker_settings: dict[str, Any] | None = None, **sim_settings: Any) -> list[SimulatorProcess]:
        sims = [start_simulator(**sim_settings) for _ in range(count)]
        for gpu, sim in enumerate(sims):
            start_worker(sim, gpu=gpu, **(worker_settings or {}))
        return sims

    return start


@pytest.fixture
def simulator(start_simulator: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return start_simulator()


@pytest.fixture
def make_app(settings: Settings, clean_redis: redis.Redis) -> Iterator[Callable[..., Flask]]:
    """make_app(**changes) -> the web app with the test settings and these changes; closed after the test."""
    made: list[Flask] = []

    def make(**changes: Any) -> Flask:
        made.append(create_app(settings.replace(**changes), {"TESTING": True}))
        return made[-1]

    yield make
    for app in made:
        celery_app(app).close()


@pytest.fixture
def live_web(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """The web tier served on a free 127.0.0.1 port by a thread of this process (stop/start keep the port)."""
    server = LiveServer(make_app()).start()
    yield server
    server.stop()


@pytest.fixture
def flower(tmp_path: Path, settings: Settings, clean_redis: redis.Redis) -> Iterator[FlowerProcess]:
    """Flower watching the test Redis, its HTTP API open on 127.0.0.1."""
    process = FlowerProcess(settings, tmp_path).start()
    yield process
    process.discard()


@pytest.fixture
def reaper(tmp_path: Path, settings: Settings, clean_redis: redis.Redis) -> Iterator[ReaperProcess]:
    """The standalone reaper (`python -m workers.reaper`), as the Procfile runs it beside the GPU workers."""
    process = ReaperProcess(settings, tmp_path).start()
    yield process
    process.discard()
