"""The web form in Firefox (Debian's firefox-esr, driven over its built-in WebDriver BiDi server by
tests/browser/firefox.py): submit, progress, result, the job in the URL, a reload that resumes, no JS errors.
`make test` installs the browser (scripts/apt-install.sh)."""
from __future__ import annotations

import json
import os
import re
import time
from typing import Iterator
from urllib.parse import parse_qs, urlparse

import pytest

from testkit.paths import SCREENSHOTS
from tests.browser.firefox import FIREFOX, Firefox

# After each load: every uncaught error and unhandled rejection the page raises, kept in window.__errors.
COLLECT_ERRORS = """(() => {
  window.__errors = window.__errors || [];
  window.addEventListener('error', (e) => window.__errors.push(`${e.message} at ${e.filename}:${e.lineno}`));
  window.addEventListener('unhandledrejection', (e) => window.__errors.push(`unhandled rejection: ${e.reason}`));
  return document.readyState;
})()"""

# Sets each field as a user would leave it: the value, then the input and change events.
FILL = """((fields) => {
  for (const [id, value] of Object.entries(fields)) {
    const input = document.getElementById(id);
    input.focus();
    input.value = value;
    input.dispatchEvent(new Event('input', {bubbles: true}));
    input.dispatchEvent(new Event('change', {bubbles: true}));
  }
  return Object.fromEntries(Object.keys(fields).map((id) => [id, document.getElementById(id).value]));
})(%s)"""

PERCENT_SHOWN = """(() => {
  const job = document.getElementById('job'), text = document.getElementById('percent').textContent;
  return job.dataset.state === 'PROGRESS' && !document.getElementById('progress').hidden
    && /^\\d+(\\.\\d)?%$/.test(text) && parseFloat(text) > 0 ? text : null;
})()"""

IMAGE_LOADED = """(() => {
  const img = document.querySelector('#result img');
  return Boolean(img && img.complete && img.naturalWidth > 0) ? img.naturalWidth : 0;
})()"""


@pytest.fixture
def firefox() -> Iterator[Firefox]:
    assert os.path.exists(FIREFOX), f"{FIREFOX} is missing: `make test` installs it (scripts/apt-install.sh)"
    browser = Firefox()
    yield browser
    try:
        browser.evaluate("0")  # a last round trip: error events still in flight arrive before its answer
    except Exception:
        pass
    errors = browser.errors
    browser.quit()
    assert not errors, f"uncaught errors in the page: {errors}"


def job_in_url(url: str) -> str | None:
    return parse_qs(urlparse(url).query).get("job", [None])[0]


def page_errors(ff: Firefox) -> list[str]:
    return list(ff.evaluate("window.__errors || []"))


def test_firefox_submit_progress_result_and_reload(start_simulator, start_worker, live_web, firefox,
                                                   request: pytest.FixtureRequest):
    ff = firefox

    def shot(suffix: str = "") -> None:
        ff.screenshot(SCREENSHOTS / f"{request.node.name}{suffix}.png")

    start_worker(start_simulator(step_seconds=0.05))
    ff.navigate(live_web.url + "/")
    assert ff.evaluate(COLLECT_ERRORS) == "complete"
    assert ff.evaluate("document.getElementById('job').hidden") is True

    # The fields are the default template's, made from GET /api/templates once the page has loaded.
    assert ff.wait_for("document.getElementById('job-form').dataset.template", timeout=10) == "txt2img"
    fields = {"prompt": "a fox in the snow, in Firefox", "width": "64", "height": "64", "steps": "40"}
    assert ff.evaluate(FILL % json.dumps(fields)) == fields
    ff.click("#submit")

    # The page follows the job: ?job=<id> in the URL, a percentage on the bar, then the image.
    job_id = ff.wait_for("new URLSearchParams(location.search).get('job')", timeout=10)
    assert re.fullmatch(r"[0-9a-f-]{8,}", job_id), job_id
    assert ff.evaluate("document.getElementById('job-link').textContent") == job_id
    percent = ff.wait_for(PERCENT_SHOWN, timeout=20)
    assert ff.evaluate("document.getElementById('progress-fill').style.width") == percent
    assert ff.evaluate("document.getElementById('progress-bar').getAttribute('aria-valuenow')") == percent[:-1]
    shot("-running")
    assert ff.wait_for(IMAGE_LOADED, timeout=20) == 64
    assert ff.evaluate("document.getElementById('job').dataset.state") == "SUCCESS"
    assert ff.evaluate("document.getElementById('status').textContent") == "Done"
    assert ff.evaluate("document.getElementById('percent').textContent") == "100%"
    assert ff.evaluate("document.getElementById('download').getAttribute('href')") == f"/api/jobs/{job_id}/images/0"
    assert ff.evaluate("document.getElementById('cancel').hidden") is True
    assert job_in_url(ff.url) == job_id
    ff.wait_for(f"document.querySelector('#recent li[data-job-id=\"{job_id}\"][data-state=\"SUCCESS\"]')",
                timeout=10)
    shot()
    assert page_errors(ff) == []

    # A reload keeps the job in the URL and comes back to the finished image.
    ff.reload()
    assert ff.evaluate(COLLECT_ERRORS) == "complete"
    assert job_in_url(ff.url) == job_id
    assert ff.wait_for(IMAGE_LOADED, timeout=10) == 64
    assert ff.evaluate("document.getElementById('job-link').textContent") == job_id
    assert ff.evaluate("document.getElementById('status').textContent") == "Done"
    time.sleep(0.3)  # the point: room for a late error from the last poll, which must not come
    shot("-reloaded")
    assert page_errors(ff) == []
