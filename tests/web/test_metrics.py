"""The web tier's /metrics: the fleet's numbers from Redis (queue depth by priority, jobs by end state and template,
jobs running, GPU workers) and the web tier's own requests, in Prometheus's text format."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from testkit.metrics import parse, value
from testkit.waiting import eventually

JOB = {"prompt": "metrics", "width": 64, "height": 64, "steps": 4}


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return parse(response.get_data(as_text=True))


def test_queue_depth_by_priority_and_jobs_ended_by_state_and_template(client):
    before = scrape(client)
    assert [value(before, "t2i_queue_depth", priority=str(p)) for p in range(10)] == [0] * 10
    assert value(before, "t2i_jobs_ended_total") == 0
    assert value(before, "t2i_gpu_workers_ready") == 0

    urgent = [client.post("/api/jobs", json={**JOB, "priority": 7}).json["id"] for _ in range(2)]
    relaxed = client.post("/api/jobs", json={**JOB, "priority": 2}).json["id"]
    samples = scrape(client)
    assert value(samples, "t2i_queue_depth", priority="7") == 2
    assert value(samples, "t2i_queue_depth", priority="2") == 1
    assert value(samples, "t2i_queue_depth") == 3
    posted = {"route": "/api/jobs", "method": "POST", "status": "202"}  # counted by this process since it started
    assert value(samples, "t2i_http_requests_total", **posted) - value(before, "t2i_http_requests_total", **posted) == 3

    assert client.delete(f"/api/jobs/{urgent[0]}").json["state"] == "CANCELLED"
    assert client.delete(f"/api/jobs/{relaxed}").json["state"] == "CANCELLED"
    assert client.delete(f"/api/jobs/{relaxed}").json["state"] == "CANCELLED"  # a second cancel ends nothing more
    samples = scrape(client)
    assert value(samples, "t2i_jobs_ended_total", state="CANCELLED", template="txt2img") == 2
    assert value(samples, "t2i_jobs_ended_total") == 2
    assert value(samples, "t2i_queue_depth", priority="7") == 1
    assert value(samples, "t2i_queue_depth", priority="2") == 0


def test_jobs_ended_by_a_worker_and_the_gpu_worker_count(client, start_simulator, start_worker):
    sim = start_simulator()
    start_worker(sim)
    before = scrape(client)
    job_id = client.post("/api/jobs", json=JOB).json["id"]
    eventually(lambda: client.get(f"/api/jobs/{job_id}").json["state"] == "SUCCESS", 30,
               lambda: f"job {job_id} did not succeed")
    samples = scrape(client)
    assert value(samples, "t2i_jobs_ended_total", state="SUCCESS", template="txt2img") == 1
    assert value(samples, "t2i_gpu_workers_ready") == 1
    assert value(samples, "t2i_jobs_running") == 0
    polled = {"route": "/api/jobs/<job_id>", "method": "GET", "status": "200"}
    assert value(samples, "t2i_http_requests_total", **polled) > value(before, "t2i_http_requests_total", **polled)
    timed = {"route": "/api/jobs"}
    assert value(samples, "t2i_http_request_seconds_count", **timed) - value(
        before, "t2i_http_request_seconds_count", **timed) == 1


def test_template_labels_stay_few(client, clean_redis):
    """A job sent by task name may name any template: the label is `other` unless TEMPLATES_DIR has it."""
    clean_redis.hset("t2i:metrics:ended", mapping={"FAILURE|" + "x" * 300: 2, "FAILURE|nope": 1,
                                                   "SUCCESS|img2img": 4, "SUCCESS|workflow": 1})
    samples = scrape(client)
    assert value(samples, "t2i_jobs_ended_total", state="FAILURE", template="other") == 3
    assert value(samples, "t2i_jobs_ended_total", state="SUCCESS", template="img2img") == 4
    assert value(samples, "t2i_jobs_ended_total", state="SUCCESS", template="workflow") == 1
    assert {dict(labels)["template"] for name, labels in samples if name == "t2i_jobs_ended_total"} == {
        "other", "img2img", "workflow"}
