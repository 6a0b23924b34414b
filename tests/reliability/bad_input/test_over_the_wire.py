"""Through a real HTTP server: ids of arbitrary bytes, chunked bodies beyond the size limit."""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import pytest
import requests
from flask import Flask
from hypothesis import example, given, strategies as st

from app.celery_app import Text2ImgCelery
from testkit.services import LiveServer
from tests.reliability.bad_input.property import GOOD, fuzz
from tests.reliability.bad_input.strategies import ROUTES


@pytest.fixture
def small_server(make_app: Callable[..., Flask]) -> Any:
    server = LiveServer(make_app(max_body_bytes=4096)).start()
    yield server
    server.stop()


def wire_error(response: requests.Response, statuses: set[int]) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def test_ids_over_the_wire(small_server: LiveServer, core: Text2ImgCelery) -> None:
    """Through a real HTTP server: ids of percent-encoded arbitrary bytes (invalid UTF-8, NUL, %2F) are 404/405
    JSON, never a 5xx; a real job's id answers over the same server."""
    session = requests.Session()
    url = small_server.url
    seen: Counter[int] = Counter()

    @fuzz(80)
    @example(raw=b"../../etc/passwd\x00", method="GET", template="/api/jobs/{}")
    @given(raw=st.binary(max_size=60), method=st.sampled_from(["GET", "DELETE", "PUT"]),
           template=st.sampled_from(["/api/jobs/{}", "/api/jobs/{}/preview", "/api/jobs/{}/images/0", "/status/{}",
                                     "/result/{}"]))
    def run(raw: bytes, method: str, template: str) -> None:
        path = template.format("".join(f"%{byte:02X}" for byte in raw))
        response = session.request(method, url + path, timeout=10)
        wire_error(response, {404, 405})
        seen[response.status_code] += 1

    run()
    assert seen[404] >= 30 and seen[405] >= 5, seen
    accepted = session.post(url + "/api/jobs", json=GOOD, timeout=10)
    assert accepted.status_code == 202 and core.dispatcher.length() == 1
    assert session.get(url + accepted.json()["status_url"], timeout=10).json()["state"] == "QUEUED"


def test_chunked_bodies_beyond_max_content_length(small_server: LiveServer, core: Text2ImgCelery) -> None:
    """Chunked bodies over MAX_CONTENT_LENGTH (4096) are 413 JSON and queue nothing."""
    session = requests.Session()
    url = small_server.url

    @fuzz(30)
    @example(size=10_000, kind="application/json", padding="spaces", route="/api/jobs")
    @example(size=10_000, kind="application/x-www-form-urlencoded", padding="spaces", route="/generate")
    @given(size=st.integers(4097, 200_000), route=ROUTES, padding=st.sampled_from(["spaces", "value"]),
           kind=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=xyz"]))
    def run(size: int, kind: str, padding: str, route: str) -> None:
        core.redis.flushall()
        if kind.startswith("multipart"):
            body = (b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nfox\r\n--xyz\r\n'
                    b'Content-Disposition: form-data; name="negative_prompt"\r\n\r\n' + b"x" * size + b"\r\n--xyz--\r\n")
        elif kind == "application/json":
            body = b'{"prompt": "x"}' + b" " * size if padding == "spaces" else b'{"prompt": "' + b"x" * size + b'"}'
        else:
            body = b"prompt=x&" + b"&" * size if padding == "spaces" else b"prompt=" + b"x" * size
        chunks = (body[i:i + 1024] for i in range(0, len(body), 1024))
        response = session.post(url + route, data=chunks, headers={"Content-Type": kind}, timeout=10)
        assert core.dispatcher.length() == 0 and core.records.recent() == [], "queued"
        assert wire_error(response, {413})["code"] == "request_entity_too_large"

    run()
