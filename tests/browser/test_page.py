"""The web form in a real browser: queue position, progress, node, ETA and preview, result and download, cancel,
failure, image-to-image (its template chosen) and a reload mid-job, a flaky or restarted web server, form errors,
recent jobs."""
from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from testkit.images import image_bytes
from testkit.waiting import eventually

SMALL = {"width": "64", "height": "64"}

# Records, in the page, every value the job view shows over time (so nothing is missed between polls).
RECORDER = """() => {
  window.__seen = {percent: [], node: [], eta: [], state: [], preview: []};
  const watch = (id, list) => new MutationObserver(() => {
    const text = document.getElementById(id).textContent;
    if (text) window.__seen[list].push(text);
  }).observe(document.getElementById(id), {childList: true, characterData: true, subtree: true});
  watch('percent', 'percent'); watch('node-title', 'node'); watch('eta', 'eta'); watch('status', 'state');
  document.getElementById('preview').addEventListener('load',
    (event) => window.__seen.preview.push(event.target.naturalWidth));
}"""

IMAGE_LOADED = """() => {
  const img = document.querySelector('#result img');
  return Boolean(img && img.complete && img.naturalWidth > 0);
}"""


def submit(page: Any, prompt: str, steps: int, **fields: str) -> str:
    page.fill("#prompt", prompt)
    for name, value in {**SMALL, "steps": str(steps), **fields}.items():
        page.fill(f"#{name}", value)
    page.click("#submit")
    page.wait_for_url(re.compile(r"[?&]job="))
    return job_in_url(page)


def job_in_url(page: Any) -> str:
    return parse_qs(urlparse(page.url).query)["job"][0]


def wait_state(page: Any, state: str, timeout: float = 30.0) -> None:
    page.wait_for_selector(f'#job[data-state="{state}"]', timeout=timeout * 1000)


def wait_running(page: Any, min_percent: float = 1.0) -> None:
    """Until the sampler is visibly under way."""
    page.wait_for_function(
        """(min) => document.getElementById('job').dataset.state === 'PROGRESS'
                    && parseFloat(document.getElementById('percent').textContent) >= min""",
        arg=min_percent, timeout=30_000)


def shown_percent(page: Any) -> float:
    return float(page.text_content("#percent").rstrip("%"))


def assert_image_shown(page: Any, job_id: str) -> None:
    page.wait_for_function(IMAGE_LOADED, timeout=15_000)
    href = page.get_attribute("#download", "href")
    assert href == f"/api/jobs/{job_id}/images/0"
    assert page.get_attribute("#download", "download") == f"{job_id}-0.png"
    assert page.is_hidden("#cancel")


def test_queued_then_progress_node_eta_preview_then_image(start_simulator, start_worker, live_web, page, screenshot):
    simulator = start_simulator(step_seconds=0.1)
    polls: list[tuple[float, str]] = []
    page.on("request", lambda r: polls.append((time.monotonic(), r.url)) if re.search(r"/api/jobs/[^/?]+$", r.url)
            and r.method == "GET" else None)
    page.add_init_script("delete window.EventSource")  # polling, the form's fallback (tests/browser/test_events.py)
    page.goto(live_web.url + "/")
    page.evaluate(RECORDER)
    job_id = submit(page, "a lighthouse on a cliff at dusk", steps=30)
    assert page.text_content("#job-link") == job_id

    # No GPU worker yet: the job waits, and the page says where it stands.
    page.wait_for_selector("#queue", state="visible")
    assert page.text_content("#status") == "Queued"
    assert page.get_attribute("#queue", "data-position") == "1"
    assert "Next in line" in page.text_content("#queue") and "no GPU worker" in page.text_content("#queue")
    assert page.is_visible("#cancel")
    screenshot("-queued")
    start_worker(simulator)
    wait_running(page, 1)
    running_from = time.monotonic()
    assert page.is_hidden("#queue")
    wait_state(page, "SUCCESS")
    finished = time.monotonic()
    assert_image_shown(page, job_id)
    seen = page.evaluate("window.__seen")
    percents = [float(text.rstrip("%")) for text in seen["percent"]]
    increases = sum(1 for a, b in zip(percents, percents[1:]) if b > a)
    assert increases >= 2, percents
    assert all(b >= a for a, b in zip(percents, percents[1:])), f"the bar went backwards: {percents}"
    assert percents[-1] == 100.0
    assert "Sampler" in seen["node"], seen["node"]
    assert any(text.startswith("about ") and text.endswith(" left") for text in seen["eta"]), seen["eta"]
    assert seen["preview"] and all(width > 0 for width in seen["preview"]), "no live preview was shown"
    assert "Running" in seen["state"] and page.text_content("#status") == "Done"
    assert page.is_hidden("#preview-box") and page.is_hidden("#error") and page.is_hidden("#reconnecting")

    # The download link serves the PNG; the recent list shows the job; polling stopped at the terminal state.
    image = requests.get(live_web.url + page.get_attribute("#download", "href"), timeout=5)
    assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    page.wait_for_selector(f'#recent li[data-job-id="{job_id}"][data-state="SUCCESS"] img')
    assert page.get_attribute(f'#recent li[data-job-id="{job_id}"] a', "href") == f"/?job={job_id}"
    screenshot()
    time.sleep(1.5)  # the point: a page still polling the finished job would have polled again by now
    assert not [url for at, url in polls if at > finished + 0.2], "kept polling a finished job"
    running = [at for at, url in polls if running_from <= at <= finished]
    gaps = [b - a for a, b in zip(running, running[1:])]
    assert len(running) >= 3 and max(gaps) < 1.6, f"polled too slowly while running: {gaps}"


def test_cancel_a_running_job(start_simulator, start_worker, live_web, jobs, page, screenshot):
    simulator = start_simulator(step_seconds=0.1)
    start_worker(simulator)
    page.goto(live_web.url + "/")
    job_id = submit(page, "a slow one to cancel", steps=100)
    wait_running(page, 5)
    assert page.is_visible("#cancel")
    at_cancel = shown_percent(page)
    page.click("#cancel")
    wait_state(page, "CANCELLED", timeout=10)
    assert page.text_content("#status") == "Cancelled"
    assert page.is_hidden("#cancel") and page.is_hidden("#result")
    assert shown_percent(page) < 100 and at_cancel < 100
    assert jobs.status(job_id)["state"] == "CANCELLED"
    page.wait_for_selector(f'#recent li[data-job-id="{job_id}"][data-state="CANCELLED"]')
    screenshot()
    eventually(lambda: simulator.posts("/interrupt"), timeout=10,
               failure=lambda: "the running prompt was never interrupted")


def test_failed_job_shows_its_reason(start_simulator, start_worker, live_web, jobs, page, screenshot):
    start_worker(start_simulator(step_seconds=0.05, fail_node="VAEDecode"))
    page.goto(live_web.url + "/")
    job_id = submit(page, "this one fails in the decoder", steps=10)
    wait_state(page, "FAILURE")
    error = page.text_content("#error")
    assert page.is_visible("#error")
    reason = jobs.status(job_id)["error"]["reason"]
    assert reason and reason in error, (reason, error)
    assert "simulated failure" in error and "VAEDecode" in error, error
    assert page.text_content("#status") == "Failed"
    assert page.is_hidden("#cancel") and page.is_hidden("#result")
    screenshot()


def test_reload_mid_job_resumes_following_it(start_simulator, start_worker, live_web, jobs, page, screenshot):
    start_worker(start_simulator(step_seconds=0.1))
    page.goto(live_web.url + "/")
    # Image-to-image: its template shows the input image and strength fields; the form sends the image as multipart.
    page.wait_for_selector('#job-form[data-template="txt2img"]')
    assert page.locator("#image").count() == 0 and page.locator("#strength-field").count() == 0
    page.select_option("#template", "img2img")
    page.wait_for_selector("#strength-field", state="visible")
    page.set_input_files("#image", files=[{"name": "input.png", "mimeType": "image/png",
                                           "buffer": image_bytes((96, 80))}])
    page.fill("#strength", "0.6")
    job_id = submit(page, "survives a reload", steps=40)
    request = jobs.status(job_id)["request"]
    assert request["template"] == "img2img" and request["strength"] == 0.6 and request["input_image"]
    wait_running(page, 5)
    before = shown_percent(page)
    page.reload()
    assert job_in_url(page) == job_id
    page.wait_for_selector(f'#job[data-job-id="{job_id}"]')
    wait_running(page, before)
    wait_state(page, "SUCCESS")
    assert job_in_url(page) == job_id
    assert_image_shown(page, job_id)
    screenshot()

    # A fresh visit finds the job in the recent list and opens it from there.
    page.goto(live_web.url + "/")
    assert page.is_hidden("#job")
    page.click(f'#recent a[data-job="{job_id}"]')
    wait_state(page, "SUCCESS")
    assert job_in_url(page) == job_id
    assert_image_shown(page, job_id)


def test_server_errors_and_restart_during_polling_do_not_lose_the_job(start_simulator, start_worker, live_web, page,
                                                                      screenshot):
    start_worker(start_simulator(step_seconds=0.1))
    page.add_init_script("delete window.EventSource")  # polling, the form's fallback (tests/browser/test_events.py)
    page.goto(live_web.url + "/")
    job_id = submit(page, "through a flaky web tier", steps=100)
    wait_running(page, 2)

    # Three polls answered 503 by the web tier.
    failed: list[str] = []

    def unavailable(route: Any) -> None:
        if route.request.method == "GET" and len(failed) < 3:
            failed.append(route.request.url)
            route.fulfill(status=503, content_type="application/json",
                          body='{"error": {"code": "unavailable", "message": "try again"}}')
        else:
            route.continue_()

    page.route(f"**/api/jobs/{job_id}", unavailable)
    page.wait_for_selector("#reconnecting", state="visible", timeout=5_000)
    assert "503" in page.text_content("#reconnecting")
    page.wait_for_selector("#reconnecting", state="hidden", timeout=10_000)
    page.unroute(f"**/api/jobs/{job_id}")
    assert len(failed) == 3 and job_in_url(page) == job_id
    before = shown_percent(page)

    # The web server goes away for a while and comes back on the same port.
    assert page.get_attribute("#job", "data-state") == "PROGRESS" and before < 90
    live_web.stop()
    page.wait_for_selector("#reconnecting", state="visible", timeout=5_000)
    screenshot("-reconnecting")
    time.sleep(1.0)  # the outage: the page keeps retrying meanwhile
    live_web.start()
    page.wait_for_selector("#reconnecting", state="hidden", timeout=15_000)
    wait_state(page, "SUCCESS")
    assert shown_percent(page) == 100.0 > before
    assert job_in_url(page) == job_id and page.text_content("#job-link") == job_id
    assert_image_shown(page, job_id)
    screenshot()


def test_form_errors_are_shown_in_words(live_web, page, screenshot):
    page.goto(live_web.url + "/")
    page.click("#submit")
    assert page.is_visible("#prompt-error") and page.is_visible("#form-error")
    page.fill("#prompt", "a cat")
    page.fill("#width", "100")
    page.click("#submit")
    assert "multiple of 8" in page.text_content("#width-error")
    assert page.is_hidden("#prompt-error")
    # An error only the API finds: its message and the field's message are shown, and nothing is followed.
    page.fill("#width", "64")
    page.fill("#seed", "99999999999999999999999")
    page.click("#submit")
    page.wait_for_selector("#seed-error", state="visible")
    assert "between" in page.text_content("#seed-error")
    assert "not valid" in page.text_content("#form-error")
    assert page.is_hidden("#job") and "job=" not in page.url
    screenshot()
