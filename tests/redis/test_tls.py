"""Redis over TLS only (`port 0`, `tls-port`, `tls-auth-clients yes`), with a CA made by openssl for the test: a GPU
worker, the web tier and the Python client run a job end to end over rediss://, and the web tier's status cache
follows Redis's key notifications over TLS."""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Iterator

import pytest
import redis

from app.client import Client
from app.settings import Settings
from testkit.redis_ha import RedisNode, TestAuthority
from testkit.waiting import eventually
from tests.conftest import TEST_SETTINGS
from web import create_app
from web.context import celery_app


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisNode, TestAuthority]]:
    ca = TestAuthority(tmp_path / "ca").make()
    server = RedisNode(tmp_path / "redis", [], tls=ca).start()
    yield server, ca
    server.stop()


def test_a_job_runs_over_tls_and_the_status_cache_is_live(tls_redis, start_simulator, start_workers, monkeypatch):
    server, ca = tls_redis
    settings = Settings.from_env(TEST_SETTINGS, redis_url=f"rediss://127.0.0.1:{server.port}/0", **ca.settings())
    app = create_app(settings, {"TESTING": True})
    core = celery_app(app)
    python_client = Client(settings)
    try:
        start_workers(core, [start_simulator(step_seconds=0.02)])
        http = app.test_client()
        cache = core.statuses.cache()
        assert cache.wait_live(10)  # CLIENT TRACKING over TLS (it used to give up on rediss://)

        job_id = http.post("/api/jobs", json={"prompt": "over TLS", "steps": 5, "width": 64, "height": 64}).json["id"]
        done = eventually(lambda: (status := http.get(f"/api/jobs/{job_id}").json)["state"] == "SUCCESS" and status,
                          30, lambda: f"not done: {http.get(f'/api/jobs/{job_id}').json}")
        image = http.get(done["images"][0]["url"])
        assert image.status_code == 200 and image.data.startswith(b"\x89PNG")

        # Live events subscribe over TLS too (before reading the status: a 503 if they cannot).
        events = http.get(f"/api/jobs/{job_id}/events")
        assert events.status_code == 200, events.data
        assert b"event: status" in events.data and b'"state":"SUCCESS"' in events.data.replace(b": ", b":")

        # A finished job's status is served from memory until Redis says one of its keys changed (over TLS).
        reads: list[str] = []
        real = core.statuses.snapshots.read
        monkeypatch.setattr(core.statuses.snapshots, "read", lambda *args: reads.append(args[0]) or real(*args))
        for _ in range(5):
            assert http.get(f"/api/jobs/{job_id}").json["state"] == "SUCCESS"
        assert len(reads) <= 1
        cached = len(reads)
        with server.client() as writer:
            writer.hset(f"t2i:job:{job_id}", "note", "changed elsewhere")
        eventually(lambda: http.get(f"/api/jobs/{job_id}") and len(reads) > cached, 5)
        assert cache.live

        # The Python client, over the same TLS settings.
        job = python_client.submit(prompt="client over TLS", steps=3, width=64, height=64)
        assert job.wait(timeout=30)["state"] == "SUCCESS"
        assert job.images()[0].startswith(b"\x89PNG")
    finally:
        python_client.close()
        core.close()

    # Without a client certificate (tls-auth-clients yes), or without TLS, Redis lets nobody in.
    bare = dict(port=server.port, socket_connect_timeout=2, socket_timeout=2, retry=None)
    with pytest.raises((redis.ConnectionError, ssl.SSLError)):
        redis.Redis(ssl=True, ssl_ca_certs=str(ca.ca), **bare).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(**bare).ping()
