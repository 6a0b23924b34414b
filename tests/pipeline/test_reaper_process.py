"""The standalone reaper (`python -m workers.reaper`) stops cleanly on SIGTERM, as a container's stop sends it."""
from __future__ import annotations

import signal

from testkit.waiting import eventually


def test_the_standalone_reaper_stops_on_sigterm(reaper):
    eventually(lambda: "handing back jobs" in reaper.log(), 10, lambda: reaper.log())
    reaper.kill(signal.SIGTERM, timeout=10)
    assert reaper.process is not None and reaper.process.returncode == 0
    assert reaper.log().splitlines()[-1].endswith("stopped")
