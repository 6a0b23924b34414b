"""Redis behind Sentinel: a master, a replica, three sentinels (quorum 2). In the middle of a soak the replica falls
behind and the master is killed (kill -9): the sentinels promote the replica, which never got the master's last
writes. Every job still ends in exactly one terminal state, none lost, no prompt run twice: the submit, the prompt
sent to ComfyUI and the job's end each check that a failover did not take them back (app/connection.py)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from app.celery_app import create_celery
from app.counters import ENDED
from app.settings import Settings
from app.snapshot_cache import SnapshotCache
from testkit.jobs import Jobs
from testkit.redis_ha import SentinelCluster
from testkit.waiting import eventually
from tests.conftest import TEST_SETTINGS
from tests.reliability.soak import run_soak
from tests.reliability.tally import record

LAG = 0.4  # seconds of writes the replica misses when the master dies
MARK = "t2i:test:lost-write"  # written while the replica lags: acknowledged by the master, never replicated


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    # Failover in about 2 s: the sentinels call the master down after 1 s without an answer (Redis's default is 30 s).
    cluster = SentinelCluster(tmp_path / "redis", down_after_ms=1000, failover_timeout_ms=3000).start()
    yield cluster
    cluster.stop()


class MasterKiller:
    """After `delay` seconds the replica falls LAG seconds behind and the master is killed; times the failover and
    the first job end after it."""

    def __init__(self, cluster: SentinelCluster, core: Any, delay: float):
        self.cluster, self.core, self.delay = cluster, core, delay
        self.failover = self.recover = 0.0
        self.lost_write = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="master-killer", daemon=True)

    def _run(self) -> None:
        try:
            time.sleep(self.delay)
            old_port = self.cluster.master.port
            ended_before = self._ended()  # the replica has at most this many job ends
            killed = self.cluster.kill_master_losing_writes(LAG, lambda: self.core.redis.set(MARK, 1))
            self.failover = self.cluster.wait_failover(old_port) - killed
            self.lost_write = self.core.redis.get(MARK) is None
            while self._ended() <= ended_before:
                time.sleep(0.02)
            self.recover = time.monotonic() - killed
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _ended(self) -> int:
        return sum(int(count) for count in self.core.redis.hvals(ENDED))


def test_a_master_killed_mid_soak_fails_over_and_every_job_ends_once(cluster, start_simulator, start_workers):
    settings = Settings.from_env(TEST_SETTINGS, **cluster.settings())
    core = create_celery(settings)
    cache: SnapshotCache[bytes | None] = SnapshotCache(settings, ("t2i:test:k:",))
    try:
        assert cache.wait_live(10)
        simulators = [start_simulator(step_seconds=0.05, previews=True) for _ in range(3)]
        start_workers(core, simulators)
        killer = MasterKiller(cluster, core, delay=1.5)
        killer.thread.start()
        summary = run_soak(Jobs(core), 48, simulators, seed=11)
        killer.thread.join(60)
        assert killer.error is None, killer.error

        # The status cache follows the new master: it tracks keys there, and hears of their changes.
        assert cache.wait_live(10)
        core.redis.set("t2i:test:k:1", "before")
        assert cache.get("1", lambda: core.redis.get("t2i:test:k:1"), keep=bool) == b"before"
        core.redis.set("t2i:test:k:1", "after")
        eventually(lambda: "1" not in cache.entries, 5)
    finally:
        cache.stop()
        core.close()
    row = record("Redis master kill -9 under Sentinel, replica 0.4 s behind (soak: 48 jobs, 3 workers)",
                 summary["finals"], summary["prompts"], killer.recover)
    print(f"\nfailover (kill -9 -> the sentinels name the replica): {killer.failover:.1f} s; first job ended after the "
          f"kill: {killer.recover:.1f} s; {summary['states']}")
    assert killer.lost_write  # the failover did take back the master's last writes
    assert summary["lost"] == [] and summary["duplicated"] == [], summary
    assert row.lost == 0 and set(summary["states"]) <= {"SUCCESS", "FAILURE", "CANCELLED"}
    assert cluster.master_port() == cluster.replica.port
