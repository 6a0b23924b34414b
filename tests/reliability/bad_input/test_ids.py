"""Job ids and image indexes on every route that takes one, and the recent jobs' limit."""
from __future__ import annotations

import posixpath
import re
from typing import Callable
from urllib.parse import quote, unquote

from hypothesis import assume, example, given, note, strategies as st

from tests.reliability.bad_input.property import GOOD, Bench, fuzz, json_error
from tests.reliability.bad_input.strategies import PNG


INJECTIONS = ["", ".", "..", "../", "../../etc/passwd", "..\\..\\windows", "%2e%2e%2f", "%252e%252e%252f", "%2F", "%00",
              "\x00", "%", "%zz", "%ff%fe", "*", "?", "[", "]", "[a-f0-9]*", "t2i:job:*", "celery-task-meta-*", "\\*",
              "' OR '1'='1", '"', "`", "<script>alert(1)</script>", "\n", "\r\n", " ", "\t", "\u202e", "\u00fc",
              "\U0001f98a", "\ufffd", "a" * 64, "b" * 65, "c" * 5000, "-", "_", "~", "$", "{}", "0", "-1", "1e3",
              "nope", "\u0660", "\uff10", "images", "preview"]
PIECES = st.sampled_from(INJECTIONS) | st.text(max_size=6)
CALLS = [("GET", "/api/jobs/{id}"), ("GET", "/api/jobs/{id}/images/0"), ("GET", "/api/jobs/{id}/preview"),
         ("DELETE", "/api/jobs/{id}"), ("GET", "/status/{id}"), ("GET", "/result/{id}"),
         ("GET", "/api/jobs/{job}/images/{id}"),
         ("PUT", "/api/jobs/{id}"), ("PATCH", "/api/jobs/{id}"), ("POST", "/api/jobs/{id}"),
         ("POST", "/status/{id}"), ("DELETE", "/result/{id}"), ("POST", "/api/jobs/{id}/images/0"),
         ("DELETE", "/api/jobs/{id}/preview")]


def legitimate(path: str, ids: list[str]) -> bool:
    """Would this path, once decoded and normalised (as a browser or proxy might), be a real route of our jobs?"""
    decoded = posixpath.normpath(re.sub("/+", "/", unquote(path, errors="replace")))
    alternatives = "|".join(map(re.escape, ids))
    return re.fullmatch(rf"/(api/jobs|status|result)/({alternatives})(/preview|/images/0)?/?", decoded) is not None


def test_injected_ids_and_indexes(bench: Bench) -> None:
    """Job ids and image indexes with traversal, encoded slashes, NUL, unicode, quotes, long strings and Redis glob
    characters, alone or around real ids, on every id route and method: 404 (405 for a method the route does not
    take) JSON, never a 5xx, never a job's data; DELETE never cancels a job it did not name."""
    queued_id = bench.client.post("/api/jobs", json=GOOD).get_json()["id"]
    bench.core.previews.save(queued_id, "image/jpeg", b"\xff\xd8SECRET-PREVIEW")
    done_id = bench.client.post("/api/jobs", json=GOOD).get_json()["id"]
    stored = bench.core.outputs.save(done_id, [PNG])
    bench.core.backend.store_result(done_id, {"images": [{**s.to_dict(), "url": f"/api/jobs/{done_id}/images/{s.index}"}
                                                     for s in stored], "seed": 1}, "SUCCESS")
    # Sanity: the real ids do answer with data, so a 404 below is about the id.
    assert bench.client.get(f"/api/jobs/{done_id}/images/0").data == PNG
    assert bench.client.get(f"/api/jobs/{queued_id}/preview").data == b"\xff\xd8SECRET-PREVIEW"
    real = [queued_id, done_id]
    tricks = (st.tuples(PIECES, st.sampled_from(real), PIECES).map("".join)
              | st.tuples(st.sampled_from(real), st.integers(0, 35), st.sampled_from(["*", "?", "[0-9a-f]", "\\", "\n"]))
              .map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:])
              | st.sampled_from(real).map(lambda i: i.upper())
              | st.sampled_from(real).map(lambda i: i + "\n"))
    ids = PIECES | st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=80) | tricks

    @fuzz(300)
    @example(call=("GET", "/api/jobs/{id}"), job_id=queued_id + "\n", safe="")
    @example(call=("GET", "/api/jobs/{job}/images/{id}"), job_id="00", safe="")
    @example(call=("GET", "/api/jobs/{id}/preview"), job_id=queued_id[:-1] + "*", safe="")
    @given(call=st.sampled_from(CALLS), job_id=ids, safe=st.sampled_from(["", "/", "/%"]))
    def run(call: tuple[str, str], job_id: str, safe: str) -> None:
        method, template = call
        path = template.format(id=quote(job_id, safe=safe), job=done_id)
        assume(not legitimate(path, real))
        note(f"{method} {path}")
        response = bench.client.open(path, method=method)
        if response.status_code == 308:  # werkzeug merges repeated slashes: follow it once
            response = bench.client.open(response.headers["Location"], method=method)
        assert response.status_code < 500
        expected = {404} if (method, template) in CALLS[:7] else {405, 404}
        if method == "DELETE" or template.endswith("/images/0"):
            expected |= {405}  # a decoded %2F can land on another route that does not take this method
        error = json_error(response, expected)
        assert error["code"] in ("not_found", "method_not_allowed")
        bench.seen[str(response.status_code)] += 1
        assert bench.client.get(f"/api/jobs/{queued_id}").get_json()["state"] == "QUEUED"
        assert not bench.redis.exists(f"t2i:cancel:{done_id}")

    run()
    assert bench.seen["404"] >= 150 and bench.seen["405"] >= 20, bench.seen
    assert bench.queued()[:2] == (0, 1)  # the queued job still queued; the finished one stays finished
    assert bench.client.get(f"/api/jobs/{done_id}").get_json()["state"] == "SUCCESS"


LIMITS = (st.integers(-5, 120).map(str) | st.text(max_size=8)
          | st.sampled_from(["", " 5", "5 ", "+5", "5.0", "1e1", "0x10", "05", "0" * 50 + "7", "\u0665", "\uff15",
                             "\u00b2", "\u2465", "1" * 5000, "%", "*", "100", "101", "0"]))


def digits_int_refuses(limit: str) -> bool:
    """str.isdigit() is True but int() fails: superscripts, circled digits..., or more than 4300 digits."""
    return limit.isdigit() and (len(limit) > 4300 or not limit.isdecimal())


def recent_jobs_answer_200_or_400(bench: Bench, limits: st.SearchStrategy[str], examples: int) -> Callable[..., None]:
    ids = [bench.client.post("/api/jobs", json={**GOOD, "prompt": f"p{n}"}).get_json()["id"] for n in range(3)]

    @fuzz(examples)
    @given(limit=limits)
    def run(limit: str) -> None:
        response = bench.client.get("/api/jobs", query_string={"limit": limit})
        assert response.status_code < 500, response.get_data()[:300]
        ascii_digits = re.fullmatch("[0-9]+", limit) is not None
        if ascii_digits and len(limit.lstrip("0")) <= 3 and 1 <= int(limit) <= 100:
            assert response.status_code == 200
        if response.status_code == 200:
            n = int(limit)
            assert [job["id"] for job in response.get_json()["jobs"]] == ids[::-1][:n]
            bench.seen["200"] += 1
        else:
            error = json_error(response, {400})
            assert error["fields"][0]["field"] == "limit"
            bench.seen["400"] += 1

    return run


def test_recent_jobs_limit(bench: Bench) -> None:
    """GET /api/jobs?limit=<anything>: 200 with at most `limit` jobs, newest first, for 1-100; else 400 JSON.
    (Digit strings int() refuses are left to their own test below.)"""
    recent_jobs_answer_200_or_400(bench, LIMITS.filter(lambda s: not digits_int_refuses(s)), 150)()
    assert bench.seen["200"] >= 20 and bench.seen["400"] >= 20, bench.seen


def test_recent_jobs_limit_of_digits_int_refuses(bench: Bench) -> None:
    refused = (st.sampled_from(["\u00b2", "\u00b3", "\u2465", "\u2081", "1\u00b2"])
               | st.integers(4301, 6000).map(lambda n: "1" * n))
    recent_jobs_answer_200_or_400(bench, refused, 20)()
