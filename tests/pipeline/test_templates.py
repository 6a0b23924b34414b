"""Workflow templates an operator adds, and raw workflows, through the web tier to real workers and simulators."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.templates import SHIPPED_DIR
from app.settings import named_tokens
from testkit.images import image_size
from testkit.waiting import eventually
from tests import graphs

WORKFLOWS = {"Authorization": "Bearer tok-w"}
PLAIN = {"Authorization": "Bearer tok-p"}
TOKENS = named_tokens("wanda:tok-w:workflows, paul:tok-p")

# An operator's template: an image blurred after it is made, with two parameters of its own.
BLURRED = {
    "1": {"class_type": "EmptyImage", "_meta": {"title": "Canvas"},
          "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageBlur", "_meta": {"title": "Blur"},
          "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
    "3": {"class_type": "SaveImage", "_meta": {"title": "Save"}, "inputs": {"images": ["2", 0],
                                                                           "filename_prefix": "x"}},
}
BLURRED_PARAMS = {"description": "A blurred canvas", "params": [
    {"name": "size", "type": "integer", "default": 64, "minimum": 64, "maximum": 256, "multiple_of": 8,
     "fills": ["Canvas.width", "Canvas.height"]},
    {"name": "sigma", "type": "number", "default": 1.0, "minimum": 0.1, "maximum": 10, "fills": ["Blur.sigma"]},
]}


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "templates"
    shutil.copytree(SHIPPED_DIR, directory)
    return directory


def test_a_template_file_added_while_running_is_listed_and_runs(templates_dir, make_app, jobs, start_simulator,
                                                                start_worker):
    start_worker(start_simulator(), TEMPLATES_DIR=str(templates_dir))
    client = make_app(templates_dir=str(templates_dir)).test_client()
    names = [t["name"] for t in client.get("/api/templates").json["templates"]]
    assert names == ["img2img", "txt2img"]
    refused = client.post("/api/jobs", json={"template": "blurred"})
    assert refused.status_code == 422 and refused.json["error"]["fields"][0]["field"] == "template"

    (templates_dir / "blurred.json").write_text(json.dumps(BLURRED))
    (templates_dir / "blurred.params.json").write_text(json.dumps(BLURRED_PARAMS))
    listed = eventually(lambda: {t["name"]: t for t in client.get("/api/templates").json["templates"]}.get("blurred"),
                        timeout=5)
    assert listed["description"] == "A blurred canvas"
    assert [(p["name"], p["type"], p["default"], p["maximum"]) for p in listed["params"]] == [
        ("size", "integer", 64, 256), ("sigma", "number", 1.0, 10)]
    schema = client.get("/api/openapi.json").json["components"]["schemas"]["Template_blurred"]
    assert schema["properties"]["size"] == {"type": "integer", "minimum": 64, "maximum": 256, "multipleOf": 8,
                                            "default": 64}

    for fields, field in (({"size": 300}, "size"), ({"sigma": 0}, "sigma"), ({"prompt": "x"}, "prompt")):
        answer = client.post("/api/jobs", json={"template": "blurred", **fields})
        assert answer.status_code == 422 and [f["field"] for f in answer.json["error"]["fields"]] == [field]
    made = client.post("/api/jobs", json={"template": "blurred", "size": 96, "sigma": 2.5})
    assert made.status_code == 202
    status = jobs.wait_terminal(made.json["id"])
    assert status["state"] == "SUCCESS" and status["request"] == {"template": "blurred", "size": 96, "sigma": 2.5}
    image = client.get(status["images"][0]["url"])
    assert image_size(image.data) == (96, 96)


def test_a_broken_template_is_left_out_and_the_others_stay(templates_dir, make_app, caplog):
    (templates_dir / "broken.json").write_text(json.dumps(BLURRED))
    (templates_dir / "broken.params.json").write_text(json.dumps(
        {"params": [{"name": "size", "type": "integer", "fills": ["No such node.width"]}]}))
    (templates_dir / "notjson.json").write_text("{")
    client = make_app(templates_dir=str(templates_dir)).test_client()
    assert [t["name"] for t in client.get("/api/templates").json["templates"]] == ["img2img", "txt2img"]
    assert "template broken" in caplog.text and "nodes titled 'No such node'" in caplog.text
    assert "template notjson" in caplog.text


def test_raw_workflows_need_the_workflows_scope(make_app, jobs):
    client = make_app(api_tokens=TOKENS).test_client()
    graph = graphs.slow(steps=1)
    refused = client.post("/api/jobs", json={"workflow": graph}, headers=PLAIN)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert refused.json["error"]["fields"][0]["field"] == "workflow"
    assert make_app().test_client().post("/api/jobs", json={"workflow": graph}).status_code == 403, \
        "off without tokens unless RAW_WORKFLOWS=1"
    assert make_app(raw_workflows=True).test_client().post("/api/jobs", json={"workflow": graph}).status_code == 202
    assert client.post("/api/jobs", json={"workflow": graph}, headers=WORKFLOWS).status_code == 202


def test_a_raw_workflow_runs_and_every_image_of_every_output_node_is_collected(make_app, jobs, start_simulator,
                                                                               start_worker):
    start_worker(start_simulator())
    client = make_app(api_tokens=TOKENS).test_client()
    graph = graphs.txt2img(batch_size=2)
    graph["10"] = {"class_type": "ImageInvert", "inputs": {"image": ["8", 0]}}
    graph["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "inverted"}}
    made = client.post("/api/jobs", json={"workflow": graph}, headers=WORKFLOWS)
    assert made.status_code == 202 and made.json["seed"] is None
    status = jobs.wait_terminal(made.json["id"])
    assert status["state"] == "SUCCESS" and len(status["images"]) == 4
    assert status["request"] == {"workflow": graph}


def test_a_raw_workflow_no_gpu_can_run_is_refused_naming_node_class_and_input(make_app, core, start_simulator,
                                                                              start_worker):
    workers = [start_worker(start_simulator(), gpu=0),
               start_worker(start_simulator(custom_nodes="ImageSharpen", checkpoints="sdxl.safetensors"), gpu=1)]
    eventually(lambda: all(core.fleet.capabilities(worker.name) for worker in workers), timeout=10)
    client = make_app(raw_workflows=True).test_client()
    recorded = core.records.recent(100)

    unknown = graphs.slow(steps=1)
    unknown["2"]["class_type"] = "ImageEmboss"
    answer = client.post("/api/jobs", json={"workflow": unknown})
    assert answer.status_code == 422 and answer.json["error"]["code"] == "no_capable_gpu"
    assert answer.json["error"]["fields"] == [{"field": "workflow.2.class_type", "message": (
        "no GPU can run this job: node 2 (ImageEmboss) needs the node class ImageEmboss, which none of the 2 GPU(s) "
        "has")}]

    missing_input = graphs.slow(steps=1)
    del missing_input["2"]["inputs"]["image"]
    answer = client.post("/api/jobs", json={"workflow": missing_input})
    assert [f["field"] for f in answer.json["error"]["fields"]] == ["workflow.2.inputs.image"]
    assert "node 2 (ImageInvert) needs its required input image" in answer.json["error"]["fields"][0]["message"]

    model = graphs.txt2img()
    model["4"]["inputs"]["ckpt_name"] = "flux.safetensors"
    answer = client.post("/api/jobs", json={"workflow": model})
    assert [f["field"] for f in answer.json["error"]["fields"]] == ["workflow.4.inputs.ckpt_name"]

    sharpened = graphs.txt2img()  # ImageSharpen is on GPU 1 only, and GPU 1 lacks the SD 1.5 checkpoint
    sharpened["10"] = {"class_type": "ImageSharpen", "inputs": {"image": ["8", 0], "sharpen_radius": 1, "sigma": 1.0,
                                                                "alpha": 1.0}}
    sharpened["9"]["inputs"]["images"] = ["10", 0]
    answer = client.post("/api/jobs", json={"workflow": sharpened})
    assert answer.status_code == 422
    assert "no single GPU has everything this job needs" in answer.json["error"]["fields"][0]["message"]
    assert core.records.recent(100) == recorded, "a refused job leaves no record"
    sharpened["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    assert client.post("/api/jobs", json={"workflow": sharpened}).status_code == 202
