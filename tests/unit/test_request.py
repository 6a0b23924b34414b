"""Job request validation (shared by the web tier, the client and the task) and the workflow it builds, with the
shipped templates."""
from __future__ import annotations

import pytest

from app.request import RequestError, WorkflowsNotAllowed, parse_request
from app.templates import Templates
from app.validation import RequestLimits
from app.workflow import node_titles

TEMPLATES = Templates()
TXT2IMG_TAKES = ("template txt2img takes prompt, negative_prompt, width, height, steps, cfg, sampler, scheduler, "
                 "seed, checkpoint, batch_size")


def parse(data, **options):
    return parse_request(data, RequestLimits(), TEMPLATES, **options)


def errors(data, **options) -> dict[str, str]:
    with pytest.raises(RequestError) as caught:
        parse(data, **options)
    return {e["field"]: e["message"] for e in caught.value.errors}


def test_defaults_and_random_seed():
    request = parse({"prompt": "a red fox"})
    assert request.name == "txt2img"
    assert {name: request.params[name] for name in ("width", "height", "steps", "checkpoint")} == \
        {"width": 512, "height": 512, "steps": 20, "checkpoint": "v1-5-pruned-emaonly.safetensors"}
    assert isinstance(request.seed, int) and 0 <= request.seed < 2 ** 32
    assert parse({"prompt": "x", "seed": 5}).seed == 5


@pytest.mark.parametrize("data,field,message", [
    ({}, "prompt", "is required and must not be blank"),
    ({"prompt": "   "}, "prompt", "is required and must not be blank"),
    ({"prompt": 3}, "prompt", "must be a string"),
    ({"prompt": "x" * 2001}, "prompt", "must be at most 2000 characters (got 2001)"),
    ({"prompt": "x", "width": 100}, "width", "must be a multiple of 8 (got 100)"),
    ({"prompt": "x", "width": 8}, "width", "must be between 64 and 4096 (got 8)"),
    ({"prompt": "x", "steps": True}, "steps", "must be an integer"),
    ({"prompt": "x", "steps": 151}, "steps", "must be between 1 and 150 (got 151)"),
    ({"prompt": "x", "cfg": "7"}, "cfg", "must be a number"),
    ({"prompt": "x", "sampler": "magic"}, "sampler", "must be one of euler, euler_ancestral, heun, dpm_2, "
                                                     "dpm_2_ancestral, lms, dpmpp_sde, dpmpp_2m, dpmpp_2m_sde, ddim, uni_pc"),
    ({"prompt": "x", "seed": -1}, "seed", "must be between 0 and 9223372036854775807 (got -1)"),
    ({"prompt": "x", "colour": "red"}, "colour", f"unknown field ({TXT2IMG_TAKES})"),
    ({"prompt": "x", "checkpoint": "../../etc/passwd"}, "checkpoint",
     "must be a plain file name (letters, digits, . _ - and spaces)"),
    ({"prompt": "x", "template": "img2img"}, "input_image",
     "needs an uploaded input image (the `image` file of a multipart request)"),
    ({"prompt": "x", "input_image": "abc"}, "input_image", f"unknown field ({TXT2IMG_TAKES})"),
    ({"prompt": "x", "template": "inpaint"}, "template", "must be one of img2img, txt2img"),
    ({"prompt": "x", "width": 4096, "height": 4096}, "width", "width x height must be at most 4194304 pixels"),
])
def test_each_rule_names_the_field(data, field, message):
    assert errors(data)[field] == message


def test_not_an_object():
    assert errors(["prompt"]) == {"(body)": "must be a JSON object"}


def test_an_uploaded_image_goes_to_the_default_image_template_and_only_to_a_template_that_takes_one():
    request = parse({"prompt": "x"}, with_image=True)
    assert (request.name, request.input_image) == ("img2img", "upload-pending")
    assert errors({"prompt": "x", "template": "txt2img"}, with_image=True) == \
        {"image": "template txt2img takes no input image"}


def test_operator_limits_cap_the_declared_ones():
    limits = RequestLimits(max_steps=40, max_batch=2, max_prompt_length=10)
    with pytest.raises(RequestError) as caught:
        parse_request({"prompt": "x" * 11, "steps": 41, "batch_size": 3}, limits, TEMPLATES)
    assert {e["field"]: e["message"] for e in caught.value.errors} == {
        "prompt": "must be at most 10 characters (got 11)", "steps": "must be between 1 and 40 (got 41)",
        "batch_size": "must be between 1 and 2 (got 3)"}


def test_a_raw_workflow_needs_the_scope_and_a_sound_graph():
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}
    with pytest.raises(WorkflowsNotAllowed):
        parse({"workflow": graph})
    assert errors({"workflow": graph, "prompt": "x"}, raw_allowed=True) == {
        "prompt": "unknown field (a raw workflow request takes `workflow`, `priority`, `client`, `webhook_url` and `webhook_progress`)",
        "workflow.2.inputs.images": "node 2 (SaveImage): input images links to node '9', which is not in the workflow"}
    assert errors({"workflow": {"1": "node"}}, raw_allowed=True) == \
        {"workflow.1": 'must be {"class_type": string, "inputs": object}'}
    graph["2"]["inputs"]["images"] = ["1", 0]
    request = parse({"workflow": graph}, raw_allowed=True)
    assert (request.name, request.seed) == ("workflow", None)
    assert request.graph("job-9")["2"]["inputs"] == {"images": ["1", 0], "filename_prefix": "text2img/job-9"}
    assert parse_request({"workflow": graph}, RequestLimits(raw_workflows=True), TEMPLATES).workflow == graph
    assert errors({"workflow": {str(n): {"class_type": "X", "inputs": {}} for n in range(501)}}, raw_allowed=True) == \
        {"workflow": "must have at most 500 nodes (got 501)"}


def test_every_problem_is_reported_at_once():
    assert set(errors({"prompt": "", "steps": 0, "bogus": 1})) == {"prompt", "steps", "bogus"}


def test_txt2img_workflow_is_filled_in():
    request = parse({"prompt": "fox", "negative_prompt": "blur", "width": 640, "height": 384, "steps": 7,
                     "seed": 9, "batch_size": 2, "sampler": "ddim", "scheduler": "karras", "cfg": 5.5})
    graph = request.graph("job-1")
    assert graph["6"]["inputs"]["text"] == "fox" and graph["7"]["inputs"]["text"] == "blur"
    assert graph["5"]["inputs"] == {"width": 640, "height": 384, "batch_size": 2}
    sampler = graph["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == \
        (9, 7, 5.5, "ddim", "karras")
    assert graph["9"]["inputs"]["filename_prefix"] == "text2img/job-1"
    assert node_titles(graph)["3"] == "Sampler"


def test_img2img_workflow_resizes_the_input_and_repeats_it_for_a_batch():
    request = parse({"prompt": "fox", "template": "img2img", "input_image": "abc", "strength": 0.4,
                     "batch_size": 3, "width": 256, "height": 128})
    assert request.graph("job-2")["10"]["inputs"]["image"] == "abc"  # the upload's id, until the worker uploads it
    graph = request.graph("job-2", image_name="job-2.png")
    assert graph["10"]["inputs"]["image"] == "job-2.png"
    assert (graph["11"]["inputs"]["width"], graph["11"]["inputs"]["height"]) == (256, 128)
    assert graph["3"]["inputs"]["denoise"] == 0.4 and graph["3"]["inputs"]["latent_image"] == ["13", 0]
    assert graph["13"]["inputs"]["amount"] == 3 and "5" not in graph
    assert request.to_dict()["input_image"] == "abc" and request.to_dict()["template"] == "img2img"
