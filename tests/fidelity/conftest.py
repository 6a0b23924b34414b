"""Fixtures for the fidelity replay: the recordings directory and a fresh simulator per scenario."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _traces_dir() -> Path:
    """COMFYUI_TRACES_DIR, else the copy kept with the tests (tests/data), else shared/ beside the repo."""
    if os.environ.get("COMFYUI_TRACES_DIR"):
        return Path(os.environ["COMFYUI_TRACES_DIR"])
    for candidate in (REPO / "tests" / "data" / "comfyui-traces", REPO.parent / "shared" / "comfyui-traces"):
        if candidate.is_dir():
            return candidate
    return REPO / "tests" / "data" / "comfyui-traces"


TRACES_DIR = _traces_dir()
OUTPUT_DIR = REPO / "test-output" / "fidelity"

# The recorded server ran ComfyUI's default preview method (none): the recordings hold no sampler preview
# frames (only SaveImageWebsocket's binary frames), so the simulator runs without sampler previews too.
SIMULATOR_SETTINGS = {"previews": False}


class SimulatorControl:
    """The kill / restart hooks the replay needs, on a SimulatorProcess (restart = start on the same port)."""

    def __init__(self, sim):
        self.sim = sim

    def kill(self, sig: int) -> None:
        self.sim.kill(sig)

    def restart(self) -> None:
        self.sim.start()


@pytest.fixture
def simulator(tmp_path):
    process = pytest.importorskip("comfysim.process", reason="the simulator package is not there yet")
    sim = process.SimulatorProcess(data_dir=tmp_path / "comfysim", **SIMULATOR_SETTINGS)
    sim.start()
    try:
        yield sim
    finally:
        if sim.alive():
            sim.kill(signal.SIGKILL)


@pytest.fixture
def simulator_control(simulator):
    return SimulatorControl(simulator)
