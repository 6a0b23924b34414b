"""API tokens with client names: listing is scoped to the caller's client, malformed headers are a 401 JSON, and
an Idempotency-Key makes a retried POST return the job the first one created."""
from __future__ import annotations

import pytest

from app.jobs import IdempotencyConflict
from app.settings import named_tokens

GOOD = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}
ALICE, BOB = {"Authorization": "Bearer tok-a"}, {"Authorization": "Bearer tok-b"}


@pytest.fixture
def guarded(make_app):
    return make_app(api_tokens=named_tokens("alice:tok-a, bob:tok-b")).test_client()


def test_token_list_names_each_client():
    assert {token: client.name for token, client in named_tokens("alice:tok-a, bob:tok-b,plain").items()} == \
        {"tok-a": "alice", "tok-b": "bob", "plain": "token3"}


def test_listing_needs_a_token_and_shows_only_the_callers_jobs(guarded, core):
    mine = guarded.post("/api/jobs", json=GOOD, headers=ALICE).json["id"]
    theirs = guarded.post("/api/jobs", json=GOOD, headers=BOB).json["id"]
    no_token = guarded.get("/api/jobs")
    assert no_token.status_code == 401 and no_token.json["error"]["code"] == "unauthorized"
    assert [job["id"] for job in guarded.get("/api/jobs", headers=ALICE).json["jobs"]] == [mine]
    assert [job["id"] for job in guarded.get("/api/jobs", headers=BOB).json["jobs"]] == [theirs]
    assert core.records.job(mine)["client"] == "alice"  # shown to operators
    # Reading one job needs its id only: the unguessable id is the capability.
    status = guarded.get(f"/api/jobs/{theirs}").json
    assert status["id"] == theirs and status["client"] == "bob"


def test_without_tokens_the_listing_is_open_and_shows_every_job(client):
    ids = [client.post("/api/jobs", json=GOOD).json["id"] for _ in range(2)]
    assert [job["id"] for job in client.get("/api/jobs").json["jobs"]] == ids[::-1]


@pytest.mark.parametrize("header", ["Bearer é", "Bearer \u2603", "Bearer", "Basic tok-a", "bearer  ", "tok-a",
                                    "Bearer tok-a\x7f", "Bearer tok-aé"])
def test_every_malformed_authorization_header_is_a_401_json(guarded, core, header):
    for method, path in (("POST", "/api/jobs"), ("GET", "/api/jobs"), ("POST", "/generate")):
        response = guarded.open(path, method=method, json=GOOD, headers={"Authorization": header.encode("utf-8")
                                                                                         .decode("latin-1")})
        assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized", (header, path)
    assert core.dispatcher.length() == 0


def test_a_retried_post_with_the_same_idempotency_key_returns_the_same_job(guarded, core):
    first = guarded.post("/api/jobs", json=GOOD, headers={**ALICE, "Idempotency-Key": "order-17"})
    again = guarded.post("/api/jobs", json=GOOD, headers={**ALICE, "Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"] and again.json["seed"] == first.json["seed"]
    assert core.dispatcher.length() == 1
    other = guarded.post("/api/jobs", json={**GOOD, "steps": 3}, headers={**ALICE, "Idempotency-Key": "order-17"})
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_conflict"
    assert first.json["id"] in other.json["error"]["message"]
    # keys are per client: Bob's "order-17" is his own
    bobs = guarded.post("/api/jobs", json=GOOD, headers={**BOB, "Idempotency-Key": "order-17"})
    assert bobs.status_code == 202 and bobs.json["id"] != first.json["id"]
    assert core.dispatcher.length() == 2


def test_a_bad_idempotency_key_is_a_400_and_queues_nothing(client, core):
    for key in ("", "x" * 256, "with space", "é"):
        response = client.post("/api/jobs", json=GOOD, headers={"Idempotency-Key": key.encode().decode("latin-1")})
        assert response.status_code == 400 and response.json["error"]["fields"][0]["field"] == "Idempotency-Key"
    assert core.dispatcher.length() == 0


def test_the_python_client_submits_idempotently(python_client, core, clean_redis):
    first = python_client.submit(idempotency_key="batch-1/item-4", **GOOD)
    assert python_client.submit(idempotency_key="batch-1/item-4", **GOOD).id == first.id
    with pytest.raises(IdempotencyConflict):
        python_client.submit(idempotency_key="batch-1/item-4", **{**GOOD, "prompt": "another"})
    assert core.dispatcher.length() == 1
