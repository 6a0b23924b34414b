"""Fixtures shared by every test: simulators as real processes on free 127.0.0.1 ports."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from comfysim.process import SimulatorProcess


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
        sim.stop()


@pytest.fixture
def simulator(start_simulator: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return start_simulator()
