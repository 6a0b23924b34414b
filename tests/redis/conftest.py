"""Redis as production may run it: behind Sentinel, over TLS, with ACL users (testkit/redis_ha.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from app.celery_app import Text2ImgCelery
from testkit.services import SimulatorProcess, WorkerProcess, settings_env


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[Callable[..., list[WorkerProcess]]]:
    """start_workers(core, simulators, **settings) -> one GPU worker per simulator, with `core`'s settings."""
    started: list[WorkerProcess] = []

    def start(core: Text2ImgCelery, simulators: list[SimulatorProcess], **settings: object) -> list[WorkerProcess]:
        workers = [WorkerProcess(core, sim.url, gpu, tmp_path, settings_env(**settings))
                   for gpu, sim in enumerate(simulators)]
        started.extend(workers)
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        return workers

    yield start
    for worker in started:
        worker.discard()
