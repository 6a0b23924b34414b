"""The JSON API: every route, and every way a request can be wrong (4xx JSON, nothing queued)."""
from __future__ import annotations

import io

import pytest

from app.settings import named_tokens
from testkit.images import image_bytes, image_size

GOOD = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3}


def broker_queue_length(core) -> int:
    return core.redis.llen(core.conf.task_default_queue)


def assert_nothing_queued(core) -> None:
    assert broker_queue_length(core) == 0
    assert core.dispatcher.length() == 0 and core.records.recent() == []


def test_create_job_answers_202_with_its_status_url(client, core):
    response = client.post("/api/jobs", json={**GOOD, "seed": 7})
    assert response.status_code == 202
    body = response.json
    assert body["state"] == "QUEUED" and body["seed"] == 7
    assert body["status_url"] == f"/api/jobs/{body['id']}" == response.headers["Location"]
    assert broker_queue_length(core) == 0 and core.dispatcher.length() == 1, "taken into the ready index at once"
    status = client.get(body["status_url"]).json
    assert status["state"] == "QUEUED"
    assert status["queue"] == {"position": 1, "workers_online": 0, "capable_workers": 0}
    assert status["request"]["prompt"] == "a red fox" and status["request"]["seed"] == 7


def test_multipart_with_an_image_is_img2img(client):
    response = client.post("/api/jobs", data={"prompt": "fox", "width": "64", "height": "64", "seed": "",
                                              "image": (io.BytesIO(image_bytes()), "in.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.json
    request = client.get(response.json["status_url"]).json["request"]
    assert request["template"] == "img2img" and request["input_image"] and request["width"] == 64


@pytest.mark.parametrize("kwargs,status,code,field", [
    ({"data": b"{not json", "content_type": "application/json"}, 400, "malformed_json", None),
    ({"data": b'{"prompt": "\xff\xfe"}', "content_type": "application/json"}, 400, "malformed_json", None),
    ({"data": "prompt=x", "content_type": "text/plain"}, 415, "unsupported_media_type", None),
    ({"json": ["a", "list"]}, 400, "invalid_request", "(body)"),
    ({"json": {"prompt": 42}}, 422, "invalid_request", "prompt"),
    ({"json": {"prompt": "x", "steps": "20"}}, 422, "invalid_request", "steps"),
    ({"json": {"prompt": "x", "nsfw": True}}, 422, "invalid_request", "nsfw"),
    ({"json": {"prompt": "x", "width": 100000}}, 422, "invalid_request", "width"),
    ({"json": {"prompt": "x", "steps": 0}}, 422, "invalid_request", "steps"),
    ({"json": {"prompt": "x" * 5000}}, 422, "invalid_request", "prompt"),
    ({"json": {"prompt": "x", "template": "inpaint"}}, 422, "invalid_request", "template"),
    ({"data": {"prompt": "x", "steps": "many"}, "content_type": "multipart/form-data"}, 422, "invalid_request", "steps"),
    ({"data": {"prompt": "x", "image": (io.BytesIO(b"GIF89a not really"), "x.gif")},
      "content_type": "multipart/form-data"}, 400, "invalid_image", "image"),
    ({"data": {"prompt": "x", "image": (io.BytesIO(b"<svg/>"), "x.png")},
      "content_type": "multipart/form-data"}, 400, "invalid_image", "image"),
])
def test_bad_requests_get_a_json_error_naming_the_problem(client, core, kwargs, status, code, field):
    response = client.post("/api/jobs", **kwargs)
    assert response.status_code == status
    error = response.json["error"]
    assert error["code"] == code and error["message"]
    if field is not None:
        assert field in [f["field"] for f in error["fields"]]
    assert_nothing_queued(core)


def test_body_too_large_is_413(make_app, core):
    client = make_app(max_body_bytes=1000).test_client()
    response = client.post("/api/jobs", json={"prompt": "x" * 2000})
    assert response.status_code == 413 and response.json["error"]["code"] == "request_entity_too_large"
    assert_nothing_queued(core)


@pytest.mark.parametrize("path", ["/api/jobs/nope", "/api/jobs/..%2F..%2Fetc%2Fpasswd", "/api/jobs/" + "a" * 300,
                                  "/api/jobs/x'%20OR%201=1", "/api/jobs/nope/images/0", "/api/jobs/nope/preview",
                                  "/status/nope", "/result/nope"])
def test_unknown_or_malformed_ids_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_cancel(client):
    job_id = client.post("/api/jobs", json=GOOD).json["id"]
    response = client.delete(f"/api/jobs/{job_id}")
    assert response.status_code == 200 and response.json["state"] == "CANCELLED"
    assert client.get(f"/api/jobs/{job_id}").json["state"] == "CANCELLED"
    assert client.delete("/api/jobs/unknown").status_code == 404


def test_recent_jobs_newest_first_and_bounded(client):
    ids = [client.post("/api/jobs", json={**GOOD, "prompt": f"p{n}"}).json["id"] for n in range(3)]
    assert [j["id"] for j in client.get("/api/jobs").json["jobs"]] == ids[::-1]
    assert [j["id"] for j in client.get("/api/jobs?limit=2").json["jobs"]] == ids[:0:-1]
    for bad in ("0", "101", "ten", "-1"):
        response = client.get(f"/api/jobs?limit={bad}")
        assert response.status_code == 400 and response.json["error"]["fields"][0]["field"] == "limit"


def test_preview_is_204_until_there_is_one(client, core):
    job_id = client.post("/api/jobs", json=GOOD).json["id"]
    assert client.get(f"/api/jobs/{job_id}/preview").status_code == 204
    core.previews.save(job_id, "image/jpeg", b"\xff\xd8fake")
    response = client.get(f"/api/jobs/{job_id}/preview")
    assert response.status_code == 200 and response.mimetype == "image/jpeg" and response.data == b"\xff\xd8fake"
    assert response.headers["Cache-Control"] == "no-store"


def test_health_and_readiness(client, core):
    assert client.get("/healthz").json == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["gpu_workers_online"] == 0
    core.fleet.heartbeat("gpu0@test", {"gpu": 0, "comfyui_url": "http://x", "healthy": True}, True, 5)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"redis": "ok", "gpu_workers_online": 1, "status": "ready",
                             "workers": [{"name": "gpu0@test", "gpu": 0, "comfyui_url": "http://x", "healthy": True}]}


def test_tokens_guard_creating_and_cancelling_but_not_reading(make_app, core):
    client = make_app(api_tokens=named_tokens("tester:s3cret")).test_client()
    assert client.post("/api/jobs", json=GOOD).status_code == 401
    assert client.post("/api/jobs", json=GOOD, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/generate", json=GOOD).status_code == 401
    assert_nothing_queued(core)
    response = client.post("/api/jobs", json=GOOD, headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 202
    job_id = response.json["id"]
    assert client.get(f"/api/jobs/{job_id}").status_code == 200
    assert client.delete(f"/api/jobs/{job_id}").status_code == 401
    assert client.delete(f"/api/jobs/{job_id}", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_no_cors_unless_configured(client, make_app):
    assert "Access-Control-Allow-Origin" not in client.get("/healthz", headers={"Origin": "http://evil"}).headers
    allowed = make_app(cors_origins=("http://ui.example",)).test_client()
    response = allowed.get("/healthz", headers={"Origin": "http://ui.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://ui.example"
    assert "Access-Control-Allow-Origin" not in allowed.get("/healthz", headers={"Origin": "http://evil"}).headers


def test_openapi_documents_exactly_the_routes(app, client):
    document = client.get("/api/openapi.json").json
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    routes = {(rule.rule.replace("<", "{").replace(">", "}"), method) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routes
    schemas = document["components"]["schemas"]
    assert schemas["JobRequest"]["oneOf"] == [{"$ref": f"#/components/schemas/{name}"}
                                              for name in ("Template_img2img", "Template_txt2img", "RawWorkflow")]
    assert set(schemas["Template_txt2img"]["properties"]) == set(GOOD) | {
        "negative_prompt", "cfg", "sampler", "scheduler", "seed", "checkpoint", "batch_size", "template"}
    assert schemas["Template_txt2img"]["required"] == ["prompt"]
    assert schemas["Template_img2img"]["required"] == ["prompt", "template"]
    assert schemas["Template_img2img"]["properties"]["strength"] == {
        "type": "number", "minimum": 0, "maximum": 1, "default": 0.75,
        "description": "how much of the input image is replaced"}


def test_finished_job_images_and_the_simple_api(client, jobs, start_simulator, start_worker):
    sim = start_simulator()
    start_worker(sim)
    simple = client.post("/generate", json={**GOOD, "batch_size": 2})
    assert simple.status_code == 200 and simple.json["status"] == "pending"
    job_id = simple.json["prompt_id"]
    assert client.get(f"/status/{job_id}").json["status"] in ("pending", "running", "completed")
    jobs.wait_terminal(job_id)
    status = client.get(f"/api/jobs/{job_id}").json
    assert status["state"] == "SUCCESS" and [i["url"] for i in status["images"]] == [
        f"/api/jobs/{job_id}/images/0", f"/api/jobs/{job_id}/images/1"]
    image = client.get(status["images"][1]["url"])
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert image_size(image.data) == (64, 64)
    assert "max-age" in image.headers["Cache-Control"] and image.headers["ETag"]
    assert client.get(status["images"][1]["url"], headers={"If-None-Match": image.headers["ETag"]}).status_code == 304
    for bad in ("2", "-1", "abc", "..%2F0"):
        assert client.get(f"/api/jobs/{job_id}/images/{bad}").status_code == 404
    old = client.get(f"/status/{job_id}").json
    steps = GOOD["steps"]
    assert old == {"status": "completed", "progress": {"value": steps, "max": steps}, "current_node": None,
                   "message": "Done", "image_url": f"/api/jobs/{job_id}/images/0", "error": None,
                   "created_at": status["created_at"], "completed_at": status["finished_at"]}
    assert client.get(f"/result/{job_id}").json == {"status": "completed", "image_url": old["image_url"],
                                                     "completed_at": status["finished_at"], "error": None}
    assert client.delete(f"/api/jobs/{job_id}").json["state"] == "SUCCESS"  # a finished job stays finished


def test_failed_job_in_both_shapes(client, jobs, start_simulator, start_worker):
    sim = start_simulator(fail_node="KSampler", fail_exception="RuntimeError: sampler exploded")
    start_worker(sim)
    job_id = client.post("/api/jobs", json=GOOD).json["id"]
    jobs.wait_terminal(job_id)
    error = client.get(f"/api/jobs/{job_id}").json["error"]
    assert error["node_id"] == "3" and error["node_type"] == "KSampler" and error["exception_type"] == "RuntimeError"
    old = client.get(f"/status/{job_id}").json
    assert old["status"] == "failed" and "sampler exploded" in old["error"]
    assert client.get(f"/api/jobs/{job_id}/images/0").status_code == 404
