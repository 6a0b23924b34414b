"""The web form follows a job by its event stream (GET /api/jobs/<id>/events) in headless Chromium, without
polling; when the stream is refused, or the browser has no EventSource, it polls and still reaches the result."""
from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.browser.test_page import RECORDER, assert_image_shown, submit, wait_running, wait_state

BUSY = '{"error": {"code": "busy", "message": "this server already serves 16 event streams"}}'


def record_job_requests(page: Any) -> list[tuple[float, str]]:
    """(time, path) of each request the page makes for a job's status or its events."""
    seen: list[tuple[float, str]] = []

    def record(request: Any) -> None:
        path = re.sub(r"^https?://[^/]+", "", request.url)
        if request.method == "GET" and re.fullmatch(r"/api/jobs/[^/?]+(/events)?", path):
            seen.append((time.monotonic(), path))

    page.on("request", record)
    return seen


def test_the_form_follows_a_job_by_its_events_without_polling(start_simulator, start_worker, live_web, page,
                                                              screenshot):
    simulator = start_simulator(step_seconds=0.1)
    requests_seen = record_job_requests(page)
    page.goto(live_web.url + "/")
    page.evaluate(RECORDER)
    job_id = submit(page, "a harbour at dawn, live", steps=30)

    # Queued with no GPU worker; a worker comes: the page shows it start, run and end, all from events.
    page.wait_for_selector("#queue", state="visible")
    assert "Next in line" in page.text_content("#queue")
    start_worker(simulator)
    wait_running(page, 1)
    wait_state(page, "SUCCESS")
    finished = time.monotonic()
    assert_image_shown(page, job_id)
    seen = page.evaluate("window.__seen")
    percents = [float(text.rstrip("%")) for text in seen["percent"]]
    assert sum(1 for a, b in zip(percents, percents[1:]) if b > a) >= 2, percents
    assert percents[-1] == 100.0 and "Sampler" in seen["node"], seen
    assert seen["preview"], "no live preview was shown"
    screenshot()

    time.sleep(3.0)  # the point: an EventSource left open would reconnect after the server's end of the stream
    paths = [path for _, path in requests_seen]
    assert paths.count(f"/api/jobs/{job_id}/events") == 1, paths
    assert f"/api/jobs/{job_id}" not in paths, f"the page polled while following by events: {paths}"
    assert all(at <= finished + 0.5 for at, _ in requests_seen)


@pytest.mark.parametrize("without", ["a stream (503 busy)", "EventSource"])
def test_the_form_polls_when_there_are_no_events(start_simulator, start_worker, live_web, page, screenshot, without):
    start_worker(start_simulator(step_seconds=0.1))
    requests_seen = record_job_requests(page)
    if without == "EventSource":
        page.add_init_script("delete window.EventSource")
    else:
        page.route("**/api/jobs/*/events", lambda route: route.fulfill(
            status=503, content_type="application/json", headers={"Retry-After": "5"}, body=BUSY))
    page.goto(live_web.url + "/")
    job_id = submit(page, "followed by polling", steps=30)
    wait_running(page, 1)
    wait_state(page, "SUCCESS")
    assert_image_shown(page, job_id)
    assert page.is_hidden("#reconnecting")
    screenshot()
    paths = [path for _, path in requests_seen]
    assert paths.count(f"/api/jobs/{job_id}") >= 3, paths
    assert paths.count(f"/api/jobs/{job_id}/events") == (0 if without == "EventSource" else 1), paths
