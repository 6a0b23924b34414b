"""The form is made from the workflow templates (GET /api/templates): the chooser lists them, the chosen one's
parameters are its fields (labels, hints, defaults, limits), the browser checks the declared limits, an img2img job
runs from an uploaded image at the priority chosen, and a template added to TEMPLATES_DIR is offered after a
reload."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests

from testkit.images import image_bytes
from testkit.waiting import eventually
from tests.browser.test_page import IMAGE_LOADED, assert_image_shown, job_in_url, wait_state

OPTIONS = "options => options.map((option) => [option.value, option.textContent])"
FIELD_IDS = "fields => fields.map((field) => field.id)"


def offered(page: Any) -> list[str]:
    return [value for value, _ in page.eval_on_selector_all("#template option", OPTIONS)]


def chosen(page: Any, name: str) -> None:
    page.wait_for_selector(f'#job-form[data-template="{name}"]')


def test_the_chosen_templates_fields_their_checks_and_an_img2img_job(start_simulator, start_worker, live_web, page,
                                                                     screenshot, tmp_path: Path):
    start_worker(start_simulator(step_seconds=0.05))
    catalogue = requests.get(live_web.url + "/api/templates", timeout=5).json()
    templates = {template["name"]: template for template in catalogue["templates"]}
    page.goto(live_web.url + "/")

    # The chooser lists every template with its description; the default (txt2img) comes first, with its fields.
    chosen(page, "txt2img")
    assert catalogue["default"] == "txt2img" and page.input_value("#template") == "txt2img"
    options = page.eval_on_selector_all("#template option", OPTIONS)
    assert [value for value, _ in options] == list(templates)
    assert all(templates[value]["description"] in text for value, text in options)
    txt2img = {param["name"]: param for param in templates["txt2img"]["params"]}
    required_first = sorted(txt2img.values(), key=lambda param: not param["required"])
    assert page.eval_on_selector_all("#template-fields .field", FIELD_IDS) == [
        f"{param['name']}-field" for param in required_first]
    assert page.text_content('label[for="negative_prompt"]') == "Negative prompt"
    assert page.text_content("#negative_prompt-hint") == txt2img["negative_prompt"]["description"]
    assert "negative_prompt-hint" in page.get_attribute("#negative_prompt", "aria-describedby")
    assert page.input_value("#width") == "512"
    assert (page.get_attribute("#width", "min"), page.get_attribute("#width", "max"),
            page.get_attribute("#width", "step")) == ("64", "4096", "8")
    assert page.get_attribute("#steps", "max") == str(txt2img["steps"]["maximum"])  # the operator's MAX_STEPS
    assert page.eval_on_selector("#sampler", "select => select.tagName") == "SELECT"
    assert page.input_value("#sampler") == "euler" and page.input_value("#cfg") == "7"
    assert page.input_value("#checkpoint") == txt2img["checkpoint"]["default"]
    assert page.input_value("#seed") == "" and page.get_attribute("#seed", "placeholder") == "random"
    assert page.locator("#image").count() == 0 and page.locator("#strength").count() == 0

    # img2img adds the input image and strength; what the person typed stays, the rest are img2img's defaults.
    page.fill("#prompt", "the same door, painted red")
    page.fill("#width", "64")
    page.select_option("#template", "img2img")
    chosen(page, "img2img")
    assert page.get_attribute("#image", "type") == "file" and page.get_attribute("#image", "name") == "image"
    assert page.text_content('label[for="image"]') == "Input image"
    assert page.eval_on_selector_all("#template-fields .field", FIELD_IDS)[:2] == ["prompt-field", "image-field"]
    assert page.input_value("#strength") == "0.75" and page.get_attribute("#strength", "max") == "1"
    assert page.input_value("#prompt") == "the same door, painted red"
    assert page.input_value("#width") == "64" and page.input_value("#height") == "512"

    # The browser checks the declared limits (and that the required image is there) before sending anything.
    page.fill("#height", "8192")
    page.fill("#strength", "1.5")
    page.click("#submit")
    assert "from 64 to 4096" in page.text_content("#height-error")
    assert "from 0 to 1" in page.text_content("#strength-error")
    assert page.is_visible("#image-error") and page.get_attribute("#image", "aria-invalid") == "true"
    assert page.is_hidden("#width-error") and page.is_visible("#form-error")
    assert page.evaluate("document.activeElement.id") == "image"  # the first marked field
    screenshot("-checks")

    # A problem only the server finds is shown next to the field it names.
    input_png = tmp_path / "input.png"
    input_png.write_bytes(image_bytes((96, 80)))
    page.set_input_files("#image", str(input_png))
    page.fill("#height", "64")
    page.fill("#strength", "0.6")
    page.fill("#steps", "12")
    page.fill("#checkpoint", "../escape.safetensors")
    page.click("#submit")
    page.wait_for_selector("#checkpoint-error", state="visible")
    assert "plain file name" in page.text_content("#checkpoint-error")
    assert page.is_hidden("#strength-error") and "job=" not in page.url

    # The img2img job runs from the uploaded image, at the priority chosen; its request records the template.
    page.fill("#checkpoint", txt2img["checkpoint"]["default"])
    page.click("details.more summary")
    page.select_option("#priority", "9")
    page.click("#submit")
    page.wait_for_url(re.compile(r"[?&]job="))
    job_id = job_in_url(page)
    wait_state(page, "SUCCESS")
    assert_image_shown(page, job_id)
    page.wait_for_function(IMAGE_LOADED)
    assert page.eval_on_selector("#result img", "img => img.naturalWidth") == 64
    assert "img2img" in page.text_content("#job-prompt") and "strength 0.6" in page.text_content("#job-prompt")
    request = requests.get(f"{live_web.url}/api/jobs/{job_id}", timeout=5).json()["request"]
    assert request["template"] == "img2img" and request["input_image"] and request["priority"] == 9
    assert (request["prompt"], request["width"], request["height"], request["steps"], request["strength"]) == (
        "the same door, painted red", 64, 64, 12, 0.6)
    screenshot()

    # "Use these settings" brings back the job's template and values, from another template.
    page.select_option("#template", "txt2img")
    page.select_option("#priority", "5")
    chosen(page, "txt2img")
    page.click("#reuse")
    chosen(page, "img2img")
    assert page.input_value("#priority") == "9"
    assert page.input_value("#strength") == "0.6" and page.input_value("#steps") == "12"
    assert page.input_value("#prompt") == "the same door, painted red"


def test_a_template_added_to_the_directory_is_offered_after_a_reload(templates_dir: Path, templates_web, page,
                                                                     screenshot):
    page.goto(templates_web.url + "/")
    chosen(page, "txt2img")
    assert offered(page) == ["img2img", "txt2img"]

    declarations = json.loads((templates_dir / "txt2img.params.json").read_text())
    declarations["description"] = "Portrait: a tall image from a prompt."
    for param in declarations["params"]:
        if param["name"] == "height":
            param["default"] = 768
    (templates_dir / "portrait.params.json").write_text(json.dumps(declarations))
    (templates_dir / "portrait.json").write_text((templates_dir / "txt2img.json").read_text())

    def reloaded_offers_portrait() -> bool:
        page.reload()
        page.wait_for_selector("#job-form[data-template]")
        return "portrait" in offered(page)

    eventually(reloaded_offers_portrait, timeout=10, interval=0.3,
               failure=lambda: f"the chooser still offers only {offered(page)}")
    assert offered(page) == ["img2img", "portrait", "txt2img"]
    assert page.text_content('#template option[value="portrait"]') == (
        "portrait — Portrait: a tall image from a prompt.")
    page.fill("#prompt", "a lighthouse keeper")
    page.select_option("#template", "portrait")
    chosen(page, "portrait")
    assert page.input_value("#height") == "768" and page.input_value("#width") == "512"
    assert page.input_value("#prompt") == "a lighthouse keeper"
    screenshot()
