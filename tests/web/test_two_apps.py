"""Two web tiers with different settings live in one process, each on its own Redis database and limits:
nothing is read from module-level state."""
from __future__ import annotations

import redis

from app.records import job_key
from app.settings import named_tokens
from testkit.services import RedisServer


def database_url(redis_server: RedisServer, db: int) -> str:
    """The URL of database `db` of the test Redis."""
    return f"{redis_server.url.rsplit('/', 1)[0]}/{db}"


def test_two_differently_configured_apps_in_one_process(redis_server, make_app):
    first = make_app(redis_url=database_url(redis_server, 1), max_steps=10)
    second = make_app(redis_url=database_url(redis_server, 2), max_steps=40, api_tokens=named_tokens("bob:tok"))

    assert first.test_client().post("/api/jobs", json={"prompt": "fox", "steps": 20}).status_code == 422
    made = first.test_client().post("/api/jobs", json={"prompt": "fox", "steps": 10})
    assert made.status_code == 202
    assert second.test_client().post("/api/jobs", json={"prompt": "fox", "steps": 20}).status_code == 401
    other = second.test_client().post("/api/jobs", json={"prompt": "owl", "steps": 20},
                                      headers={"Authorization": "Bearer tok"})
    assert other.status_code == 202

    in_first = redis.Redis.from_url(database_url(redis_server, 1))
    in_second = redis.Redis.from_url(database_url(redis_server, 2))
    assert in_first.exists(job_key(made.json["id"])) and not in_second.exists(job_key(made.json["id"]))
    assert in_second.exists(job_key(other.json["id"])) and not in_first.exists(job_key(other.json["id"]))
    assert first.test_client().get(f"/api/jobs/{other.json['id']}").status_code == 404
    assert second.test_client().get(f"/api/jobs/{other.json['id']}").json["client"] == "bob"
    limits = [app.test_client().get("/api/openapi.json").json["components"]["schemas"]["Template_txt2img"]
              ["properties"]["steps"]["maximum"] for app in (first, second)]
    assert limits == [10, 40]
