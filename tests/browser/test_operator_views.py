"""What a person sees of a finished job in the web form and in Flower (these screenshots are the README's)."""
from __future__ import annotations

from testkit.waiting import eventually


def test_finished_job_in_the_form_and_in_flower(start_simulator, start_worker, live_web, flower, page, screenshot):
    sim = start_simulator(step_seconds=0.05, previews=True)
    worker = start_worker(sim)
    eventually(lambda: flower.follows(worker.name))
    page.goto(live_web.url + "/")
    page.fill("#prompt", "a lighthouse on a cliff at dusk, oil painting")
    page.fill("#width", "384")
    page.fill("#height", "384")
    page.fill("#steps", "24")
    page.click("#submit")
    page.wait_for_function("document.querySelector('#result img') && document.querySelector('#result img').naturalWidth > 0",
                           timeout=60000)
    assert page.evaluate("document.querySelector('#result img').naturalWidth") == 384
    job_id = page.evaluate("new URLSearchParams(location.search).get('job')")
    page.wait_for_function("(() => { const bar = document.querySelector('#progress-fill');"
                           " return bar.getBoundingClientRect().width >= bar.parentElement.getBoundingClientRect().width - 1; })()")
    screenshot("-form")
    page.goto(flower.url + "/tasks")
    page.wait_for_selector(f"text={job_id}", timeout=20000)
    assert page.locator("text=text2img.generate").count() >= 1
    assert page.locator("text=SUCCESS").count() >= 1
    screenshot("-flower")
