"""Fixtures for replaying recordings of a real ComfyUI 0.3.64 against the ComfyUI client."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from testkit.recordings import load_recording
from tests.replay.scenario import scenario_of
from tests.replay.server import ReplayServer


@pytest.fixture
def replay() -> Iterator[Callable[..., ReplayServer]]:
    """replay("normal_run", max_gap=0.1, history_delay=0.0) -> a started ReplayServer on 127.0.0.1.

    At teardown the servers stop, and anything a server could not honour (a request the recording does not
    have, a POST in the wrong order, a client or graph that does not match) fails the test."""
    servers: list[ReplayServer] = []

    def start(scenario: str, **options: Any) -> ReplayServer:
        server = ReplayServer(scenario_of(load_recording(scenario)), **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    errors = [f"{server.scenario.name}: {error}" for server in servers for error in server.errors]
    assert not errors, "the replay could not honour the client:\n" + "\n".join(errors)

