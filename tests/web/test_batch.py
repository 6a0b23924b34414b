"""POST /api/jobs/batch (app/batch.py): up to 1,000 jobs at once, all or nothing, queued in the order of the
requests with exact positions, as ordinary Celery task messages that a GPU worker runs like any other job."""
from __future__ import annotations

import json

import pytest

from app.batch import MAX_REQUESTS, submit_many
from app.capabilities import Capabilities
from app.settings import named_tokens
from comfysim.catalogue import NODES, OPTIONAL_NODES, combo_lists
from testkit.images import image_bytes
from testkit.waiting import eventually
from tests.graphs import txt2img

GOOD = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3}
ALICE, BOB = {"Authorization": "Bearer tok-a"}, {"Authorization": "Bearer tok-b"}


def batch(client, requests, **kwargs):
    return client.post("/api/jobs/batch", json={"requests": requests}, **kwargs)


def fields_named(response) -> list[str]:
    return [field["field"] for field in response.json["error"]["fields"]]


def assert_nothing_queued(core) -> None:
    assert core.redis.llen(core.conf.task_default_queue) == 0
    assert core.dispatcher.length() == 0 and core.records.recent() == []
    assert core.redis.keys("t2i:job:*") == []


def positions(core, job_ids: list[str]) -> list[int | None]:
    return [core.statuses.job_status(job_id)["queue"]["position"] for job_id in job_ids]


def test_a_batch_is_queued_in_the_order_of_its_requests_with_exact_positions(client, core):
    requests = [{**GOOD, "prompt": f"fox {n}", **({"seed": n} if n % 2 else {})} for n in range(50)]
    response = batch(client, requests)
    assert response.status_code == 202
    queued = response.json["jobs"]
    job_ids = [job["id"] for job in queued]
    assert len(set(job_ids)) == 50
    assert all(job["status_url"] == f"/api/jobs/{job['id']}" and job["state"] == "QUEUED" for job in queued)
    assert [job["seed"] for job in queued][1::2] == list(range(1, 50, 2))
    assert core.dispatcher.length() == 50 and core.redis.llen(core.conf.task_default_queue) == 0
    assert positions(core, job_ids) == list(range(1, 51))
    for job, request in zip(queued, requests):
        status = client.get(job["status_url"]).json
        assert status["state"] == "QUEUED" and status["request"]["prompt"] == request["prompt"]
        assert status["request"]["seed"] == job["seed"]
    assert core.records.recent(100) == job_ids[::-1], "recorded as fifty single submits, newest first"
    single = client.post("/api/jobs", json=GOOD).json["id"]
    assert positions(core, [single]) == [51]


def test_priorities_and_fair_shares_are_those_of_the_same_jobs_sent_one_by_one(jobs, core, clean_redis):
    requests = [{**GOOD, "prompt": f"p{n}", "client": ("alice", "bob", "carol")[n % 3 if n < 6 else 0],
                 "priority": 9 if n in (4, 7) else 5} for n in range(12)]
    one_by_one = positions(core, [jobs.submit(request)[0] for request in requests])
    clean_redis.flushall()
    queued = submit_many(core, requests)
    assert [request.client for _, request in queued] == [request["client"] for request in requests]
    assert positions(core, [job_id for job_id, _ in queued]) == one_by_one
    assert one_by_one != list(range(1, 13)), "priorities and fair shares reorder these jobs"


def test_one_bad_request_refuses_the_whole_batch_naming_every_bad_field(client, core):
    requests = [dict(GOOD) for _ in range(10)]
    requests[3] = {**GOOD, "steps": 0}
    requests[7] = {**GOOD, "prompt": 42, "width": 7}
    requests[8] = ["not", "an", "object"]
    response = batch(client, requests)
    assert response.status_code == 422 and response.json["error"]["code"] == "invalid_request"
    assert fields_named(response) == ["requests[3].steps", "requests[7].prompt", "requests[7].width", "requests[8]"]
    assert_nothing_queued(core)


@pytest.mark.parametrize("body,status,field", [
    ({"requests": []}, 422, "requests"),
    ({"requests": [GOOD] * (MAX_REQUESTS + 1)}, 422, "requests"),
    ({"requests": GOOD}, 422, "requests"),
    ({}, 422, "requests"),
    ({"requests": [GOOD], "priority": 9}, 422, "priority"),
    ([GOOD], 400, "(body)"),
])
def test_a_batch_is_a_list_of_1_to_1000_requests(client, core, body, status, field):
    response = client.post("/api/jobs/batch", json=body)
    assert response.status_code == status and fields_named(response) == [field]
    assert response.json["error"]["message"]
    assert_nothing_queued(core)


def test_a_batch_is_json_only(client, core):
    assert client.post("/api/jobs/batch", data=b"{not json", content_type="application/json").status_code == 400
    form = client.post("/api/jobs/batch", data={"prompt": "x"}, content_type="multipart/form-data")
    assert form.status_code == 415 and form.json["error"]["code"] == "unsupported_media_type"
    assert_nothing_queued(core)


def test_a_thousand_at_once(client, core):
    response = batch(client, [{**GOOD, "prompt": f"p{n}"} for n in range(MAX_REQUESTS)])
    assert response.status_code == 202 and len(response.json["jobs"]) == MAX_REQUESTS
    assert core.dispatcher.length() == MAX_REQUESTS
    last = response.json["jobs"][-1]["id"]
    assert positions(core, [last]) == [MAX_REQUESTS]


def test_tokens_name_the_client_as_for_single_submits(make_app, core):
    client = make_app(api_tokens=named_tokens("alice:tok-a, bob:tok-b")).test_client()
    assert batch(client, [GOOD]).status_code == 401
    refused = batch(client, [GOOD, {**GOOD, "client": "bob"}], headers=ALICE)
    assert refused.status_code == 422 and fields_named(refused) == ["requests[1].client"]
    assert_nothing_queued(core)
    response = batch(client, [GOOD, {**GOOD, "client": "alice"}], headers=ALICE)
    assert response.status_code == 202
    job_ids = [job["id"] for job in response.json["jobs"]]
    assert [core.records.job(job_id)["client"] for job_id in job_ids] == ["alice", "alice"]
    assert core.records.recent(client="alice") == job_ids[::-1] and core.records.recent(client="bob") == []
    listed = client.get("/api/jobs", headers=BOB).json["jobs"]
    assert listed == []


def test_raw_workflows_need_the_scope_as_for_single_submits(make_app, core):
    client = make_app(api_tokens=named_tokens("alice:tok-a, bob:tok-b:workflows")).test_client()
    graph = txt2img()
    refused = batch(client, [GOOD, {"workflow": graph}, {**GOOD, "steps": 0}], headers=ALICE)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert fields_named(refused) == ["requests[1].workflow", "requests[2].steps"]
    assert_nothing_queued(core)
    assert batch(client, [GOOD, {"workflow": graph}], headers=BOB).status_code == 202


def test_webhooks_and_uploaded_images_are_checked_as_for_single_submits(make_app, core):
    client = make_app(webhook_secret="s3cret").test_client()
    uploaded, _ = core.inputs.save(image_bytes())
    refused = batch(client, [{**GOOD, "webhook_url": "http://127.0.0.1/hook"},
                             {**GOOD, "template": "img2img", "input_image": "0" * 32},
                             {**GOOD, "template": "img2img", "input_image": uploaded}])
    assert refused.status_code == 422
    assert fields_named(refused) == ["requests[0].webhook_url", "requests[1].input_image"]
    assert_nothing_queued(core)
    response = batch(client, [{**GOOD, "template": "img2img", "input_image": uploaded}])
    assert response.status_code == 202
    request = client.get(response.json["jobs"][0]["status_url"]).json["request"]
    assert request["template"] == "img2img" and request["input_image"] == uploaded


def test_jobs_no_known_gpu_can_run_are_refused_naming_the_field(client, core):
    info = {node: spec.object_info(combo_lists(["sd15.safetensors"], [])) for node, spec in NODES.items()
            if node not in OPTIONAL_NODES}
    core.fleet.heartbeat("gpu0@t", {"gpu": 0, "comfyui_url": "http://x", "healthy": True}, True, 60)
    core.fleet.publish_capabilities("gpu0@t", Capabilities.from_object_info(info), 60)
    runnable = {**GOOD, "checkpoint": "sd15.safetensors"}
    refused = batch(client, [runnable, runnable, {**GOOD, "checkpoint": "sdxl.safetensors"}, runnable])
    assert refused.status_code == 422 and refused.json["error"]["code"] == "no_capable_gpu"
    assert fields_named(refused) == ["requests[2].checkpoint"]
    mixed = batch(client, [{**GOOD, "checkpoint": "sdxl.safetensors"}, {**runnable, "steps": 0}])
    assert mixed.status_code == 422 and mixed.json["error"]["code"] == "invalid_request"
    assert fields_named(mixed) == ["requests[0].checkpoint", "requests[1].steps"]
    assert_nothing_queued(core)
    assert batch(client, [runnable] * 3).status_code == 202


def test_an_idempotency_key_replays_the_whole_batch(client, core):
    requests = [{**GOOD, "prompt": f"p{n}"} for n in range(5)]
    first = batch(client, requests, headers={"Idempotency-Key": "batch-1"})
    again = batch(client, requests, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == again.status_code == 202
    assert again.json == first.json and core.dispatcher.length() == 5
    other = batch(client, requests[:4], headers={"Idempotency-Key": "batch-1"})
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_conflict"
    single = client.post("/api/jobs", json=GOOD, headers={"Idempotency-Key": "batch-1"})
    assert single.status_code == 409 and first.json["jobs"][0]["id"] in single.json["error"]["message"]
    assert core.dispatcher.length() == 5


def test_a_batch_runs_on_a_gpu_worker_as_ordinary_celery_tasks(client, core, start_simulator, start_worker):
    sim = start_simulator()
    worker = start_worker(sim)
    response = batch(client, [{**GOOD, "prompt": f"fox {n}", "seed": n} for n in range(6)])
    job_ids = [job["id"] for job in response.json["jobs"]]
    for n, job_id in enumerate(job_ids):
        result = core.AsyncResult(job_id).get(timeout=60)  # Celery's own result of the task
        assert result["seed"] == n and result["images"][0]["width"] == 64
        meta = core.statuses.backend_meta(job_id)
        assert meta["name"] == "text2img.generate" and meta["kwargs"]["prompt"] == f"fox {n}"
        assert client.get(f"/api/jobs/{job_id}").json["state"] == "SUCCESS"
    started = sorted(job_ids, key=lambda job_id: core.records.job(job_id)["started_at"])
    assert started == job_ids, "one GPU runs them in the order of the batch"
    assert [r["prompt_id"] for r in sim.posts("/prompt")] == job_ids
    assert "Traceback" not in worker.log()


def test_flower_shows_a_batchs_jobs_from_the_moment_they_are_queued(flower, python_client, start_simulator,
                                                                       start_worker):
    from tests.client.test_flower import flower_state

    def probe_seen() -> bool:
        """Flower receives events now (those sent before it listened are lost: then another probe)."""
        probe = python_client.submit(**GOOD)
        try:
            flower_state(flower, probe.id, "PENDING", timeout=3)
        except AssertionError:
            return False
        return True

    eventually(probe_seen, 45, lambda: "Flower never showed a probe job")
    queued = python_client.submit_many([{**GOOD, "prompt": "seen in Flower"}] * 3)
    pending = flower_state(flower, queued[0].id, "PENDING")  # its task-sent event
    assert pending["name"] == "text2img.generate" and "seen in Flower" in pending["kwargs"]
    worker = start_worker(start_simulator())
    for job in queued:
        assert job.wait(timeout=60)["state"] == "SUCCESS"
        done = flower_state(flower, job.id, "SUCCESS")
        assert done["worker"] == worker.name and done["name"] == "text2img.generate"


def test_the_messages_are_those_send_task_makes(core, jobs):
    """Beside the ids, the Celery message a batch job waits with is the one a single submit's has (kwargsrepr, the
    text Flower shows of the arguments, is made by repr(); Celery's saferepr escapes a few characters otherwise)."""
    request = {**GOOD, "seed": 5, "client": "bob", "priority": 7}
    single, _ = jobs.submit(request)
    (batched, _), = submit_many(core, [request])

    def message(job_id: str) -> tuple[dict, dict]:
        record = core.records.job(job_id)
        head, props = json.loads(record["message_head"] + "}"), json.loads(record["message_props"])
        props.pop("delivery_tag", None)
        return json.loads(json.dumps(head).replace(job_id, "ID")), json.loads(json.dumps(props).replace(job_id, "ID"))

    assert message(batched) == message(single)
