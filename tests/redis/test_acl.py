"""Redis ACL users per role, exactly as the README's ```acl block sets them up, on a Redis whose `default` user is off:
the web tier, a GPU worker and the Python client each do all they do with only their own user's commands, keys and
channels (Redis refuses nothing: ACL LOG stays empty), and each is refused what it should not have."""
from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest
import redis

from app.celery_app import create_celery
from app.client import Client
from app.settings import Settings
from testkit.images import image_bytes
from testkit.redis_ha import RedisNode, acl_server
from testkit.waiting import eventually
from tests.conftest import TEST_SETTINGS
from web import create_app
from web.context import celery_app


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhooks() -> Iterator[tuple[str, list[bytes]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Receiver.received
    server.shutdown()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[RedisNode, dict[str, str]]]:
    server, passwords = acl_server(tmp_path / "redis")
    yield server, passwords
    server.stop()


def refused(client: redis.Redis, *command: str) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_each_role_works_with_only_its_acl_user(acl_redis, webhooks, start_simulator, start_workers):
    server, passwords = acl_redis
    hook_url, received = webhooks

    def settings(role: str) -> Settings:
        return Settings.from_env({**TEST_SETTINGS, "WEBHOOK_SECRET": "s", "WEBHOOK_ALLOW_PRIVATE": "1"},
                                 redis_url=f"redis://{role}:{passwords[role]}@127.0.0.1:{server.port}/0")

    worker_core = create_celery(settings("worker"))
    app = create_app(settings("web"), {"TESTING": True})
    web_core = celery_app(app)
    python_client = Client(settings("client"))
    try:
        [worker] = start_workers(worker_core, [start_simulator(step_seconds=0.02, previews=True)])
        http_client = app.test_client()
        assert web_core.statuses.cache().wait_live(10)  # CLIENT TRACKING, as the web user

        # web: submit (with a webhook), follow, images, live events, cancel, listing, readiness, metrics.
        job_id = http_client.post("/api/jobs", headers={"Idempotency-Key": "acl-1"}, json={
            "prompt": "acl web", "steps": 10, "width": 64, "height": 64, "webhook_url": hook_url,
            "webhook_progress": [50]}).json["id"]
        done = eventually(lambda: (status := http_client.get(f"/api/jobs/{job_id}").json)["state"] == "SUCCESS"
                          and status, 30, lambda: str(http_client.get(f"/api/jobs/{job_id}").json))
        assert http_client.get(done["images"][0]["url"]).status_code == 200
        assert http_client.get(f"/api/jobs/{job_id}/events").status_code == 200
        slow = http_client.post("/api/jobs", json={"prompt": "acl slow", "steps": 150, "width": 64,
                                                   "height": 64}).json["id"]
        queued = http_client.post("/api/jobs", json={"prompt": "acl queued", "steps": 3, "width": 64,
                                                     "height": 64}).json["id"]
        assert http_client.delete(f"/api/jobs/{queued}").json["state"] == "CANCELLED"
        eventually(lambda: http_client.get(f"/api/jobs/{slow}").json["state"] == "PROGRESS", 10)
        assert http_client.delete(f"/api/jobs/{slow}").json["state"] == "CANCELLED"
        for path in ("/api/jobs?limit=5", "/readyz", "/metrics", "/api/webhooks/failed"):
            assert http_client.get(path).status_code == 200, path
        eventually(lambda: len(received) >= 2, 10)  # the worker sent the job's webhooks (progress, end)

        # client: submit (an uploaded image too), wait, images, cancel, workers, dead webhooks.
        job = python_client.submit(prompt="acl client", steps=3, width=64, height=64)
        assert job.wait(timeout=30)["state"] == "SUCCESS" and job.images()[0].startswith(b"\x89PNG")
        upload = python_client.submit(template="img2img", prompt="acl upload", steps=3, width=64, height=64,
                                      input_image=image_bytes())
        assert upload.wait(timeout=30)["state"] == "SUCCESS"
        assert python_client.submit(prompt="acl client cancel", steps=150).cancel()["state"] == "CANCELLED"
        assert len(python_client.workers()) == 1 and python_client.app.webhooks.dead_letters() == []
        worker.stop()  # its shutdown too (it hands back what waits in its queue)
    finally:
        python_client.close()
        web_core.close()
        worker_core.close()
        with server.client() as admin:
            for entry in admin.acl_log(count=100):  # what Redis refused, if anything
                print(f"ACL LOG: {entry['username']} {entry['reason']} {entry['object']} ({entry['context']})")

    with server.client() as admin:
        assert admin.acl_log() == [], "Redis refused a role something it needs: fix the README's ACL block"
        as_role = {role: redis.Redis(port=server.port, username=role, password=password, retry=None)
                   for role, password in passwords.items()}
        assert all(refused(as_role[role], "FLUSHALL") and refused(as_role[role], "CONFIG", "GET", "*")
                   and refused(as_role[role], "KEYS", "*") for role in as_role)
        assert refused(as_role["client"], "HGETALL", "unacked")  # Celery's unacknowledged messages
        assert refused(as_role["web"], "HSET", "t2i:worker:gpu9@forged", "comfyui_url", "http://evil")
        assert refused(as_role["client"], "SET", "t2i:out:some-job:0", "not an image")
        assert not refused(as_role["client"], "HGETALL", "t2i:worker:gpu9@forged")  # reading is allowed
        # Under Sentinel, what app/connection.py's Replication asks (a lone Redis has no replica to wait for).
        assert not any(refused(client, "ROLE") or refused(client, "INCR", "t2i:replication:barrier")
                       or refused(client, "WAIT", "0", "1") for client in as_role.values())
        for client in as_role.values():
            client.close()
