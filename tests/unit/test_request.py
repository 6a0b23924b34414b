"""Job request validation (shared by the web tier, the client and the task) and the workflow it builds."""
from __future__ import annotations

import pytest

from app.request import RequestError, parse_request
from app.workflow import build_workflow, node_titles


def errors(data) -> dict[str, str]:
    with pytest.raises(RequestError) as caught:
        parse_request(data)
    return {e["field"]: e["message"] for e in caught.value.errors}


def test_defaults_and_random_seed():
    request = parse_request({"prompt": "a red fox"})
    assert (request.width, request.height, request.steps, request.template) == (512, 512, 20, "txt2img")
    assert isinstance(request.seed, int) and 0 <= request.seed < 2 ** 32
    assert parse_request({"prompt": "x", "seed": 5}).seed == 5


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
    ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
    ({"prompt": "x", "checkpoint": "../../etc/passwd"}, "checkpoint",
     "must be a plain file name (letters, digits, . _ - and spaces)"),
    ({"prompt": "x", "template": "img2img"}, "input_image", "img2img needs an input image"),
    ({"prompt": "x", "input_image": "abc"}, "input_image", "only the img2img template takes an input image"),
    ({"prompt": "x", "width": 4096, "height": 4096}, "width", "width x height must be at most 4194304 pixels"),
])
def test_each_rule_names_the_field(data, field, message):
    assert errors(data)[field] == message


def test_not_an_object():
    assert errors(["prompt"]) == {"(body)": "must be a JSON object"}


def test_every_problem_is_reported_at_once():
    assert set(errors({"prompt": "", "steps": 0, "bogus": 1})) == {"prompt", "steps", "bogus"}


def test_txt2img_workflow_is_filled_in():
    request = parse_request({"prompt": "fox", "negative_prompt": "blur", "width": 640, "height": 384, "steps": 7,
                             "seed": 9, "batch_size": 2, "sampler": "ddim", "scheduler": "karras", "cfg": 5.5})
    graph = build_workflow(request, "job-1")
    assert graph["6"]["inputs"]["text"] == "fox" and graph["7"]["inputs"]["text"] == "blur"
    assert graph["5"]["inputs"] == {"width": 640, "height": 384, "batch_size": 2}
    sampler = graph["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == \
        (9, 7, 5.5, "ddim", "karras")
    assert graph["9"]["inputs"]["filename_prefix"] == "text2img/job-1"
    assert node_titles(graph)["3"] == "Sampler"


def test_img2img_workflow_resizes_the_input_and_repeats_it_for_a_batch():
    request = parse_request({"prompt": "fox", "template": "img2img", "input_image": "abc", "strength": 0.4,
                             "batch_size": 3, "width": 256, "height": 128})
    graph = build_workflow(request, "job-2", input_image_name="job-2.png")
    assert graph["10"]["inputs"]["image"] == "job-2.png"
    assert (graph["11"]["inputs"]["width"], graph["11"]["inputs"]["height"]) == (256, 128)
    assert graph["3"]["inputs"]["denoise"] == 0.4 and graph["3"]["inputs"]["latent_image"] == ["13", 0]
    assert graph["13"]["inputs"]["amount"] == 3 and "5" not in graph
