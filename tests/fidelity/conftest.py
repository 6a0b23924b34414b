"""Fixtures for the fidelity replay: the recordings directory and a fresh simulator per scenario."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from testkit.paths import TEST_OUTPUT
from testkit.recordings import TRACES_DIR as TRACES_KEPT
from testkit.services import SimulatorProcess

TRACES_DIR = Path(os.environ.get("COMFYUI_TRACES_DIR", str(TRACES_KEPT)))  # another set of recordings, if given
OUTPUT_DIR = TEST_OUTPUT / "fidelity"

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
    sim = SimulatorProcess(data_dir=tmp_path / "comfysim", **SIMULATOR_SETTINGS)
    sim.start()
    try:
        yield sim
    finally:
        if sim.alive():
            sim.kill(signal.SIGKILL)


@pytest.fixture
def simulator_control(simulator):
    return SimulatorControl(simulator)
