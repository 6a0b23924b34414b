"""Two web tiers with different settings live in one process, each on its own Redis database and limits:
nothing is read from module-level state."""
from __future__ import annotations

import redis

from app.settings import Settings
from web import create_app


def test_two_differently_configured_apps_in_one_process(redis_server):
    first = create_app(Settings(redis_url=redis_server.url.rsplit("/", 1)[0] + "/1", max_steps=10))
    second = create_app(Settings(redis_url=redis_server.url.rsplit("/", 1)[0] + "/2", max_steps=40,
                                 api_tokens={"tok": "bob"}))
    for db in (1, 2):
        redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{db}").flushdb()

    assert first.test_client().post("/api/jobs", json={"prompt": "fox", "steps": 20}).status_code == 400
    made = first.test_client().post("/api/jobs", json={"prompt": "fox", "steps": 10})
    assert made.status_code == 202
    assert second.test_client().post("/api/jobs", json={"prompt": "fox", "steps": 20}).status_code == 401
    other = second.test_client().post("/api/jobs", json={"prompt": "owl", "steps": 20},
                                      headers={"Authorization": "Bearer tok"})
    assert other.status_code == 202

    in_first = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/1")
    in_second = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/2")
    assert in_first.exists(f"t2i:job:{made.json['id']}") and not in_second.exists(f"t2i:job:{made.json['id']}")
    assert in_second.exists(f"t2i:job:{other.json['id']}") and not in_first.exists(f"t2i:job:{other.json['id']}")
    assert first.test_client().get(f"/api/jobs/{other.json['id']}").status_code == 404
    assert second.test_client().get(f"/api/jobs/{other.json['id']}").json["client"] == "bob"
    limits = [app.test_client().get("/api/openapi.json").json["components"]["schemas"]["JobRequest"]
              ["properties"]["steps"]["maximum"] for app in (first, second)]
    assert limits == [10, 40]
