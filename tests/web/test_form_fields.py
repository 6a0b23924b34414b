"""A multipart form's strings become the chosen template's declared types (numbers, numeric choices)."""
from __future__ import annotations

import json
import shutil

from app.templates import SHIPPED_DIR

UPSCALED = {
    "1": {"class_type": "EmptyImage", "_meta": {"title": "Canvas"},
          "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageScaleBy", "_meta": {"title": "Scale"},
          "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 1.0}},
    "3": {"class_type": "SaveImage", "_meta": {"title": "Save"}, "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
}
PARAMS = {"params": [
    {"name": "factor", "type": "choice", "options": [1, 2, 4], "default": 1, "fills": ["Scale.scale_by"]},
    {"name": "size", "type": "integer", "default": 64, "minimum": 64, "maximum": 128, "fills": ["Canvas.width"]}]}


def test_form_strings_take_the_declared_types(tmp_path, make_app, core):
    directory = tmp_path / "templates"
    shutil.copytree(SHIPPED_DIR, directory)
    (directory / "upscaled.json").write_text(json.dumps(UPSCALED))
    (directory / "upscaled.params.json").write_text(json.dumps(PARAMS))
    client = make_app(templates_dir=str(directory)).test_client()
    made = client.post("/api/jobs", data={"template": "upscaled", "factor": "2", "size": "96"},
                       content_type="multipart/form-data")
    assert made.status_code == 202
    assert client.get(made.json["status_url"]).json["request"] == {"template": "upscaled", "factor": 2, "size": 96}
    refused = client.post("/api/jobs", data={"template": "upscaled", "factor": "3", "size": "big"},
                          content_type="multipart/form-data")
    assert refused.status_code == 422
    assert [f["field"] for f in refused.json["error"]["fields"]] == ["size"]
    refused = client.post("/api/jobs", data={"template": "upscaled", "factor": "3"}, content_type="multipart/form-data")
    assert refused.json["error"]["fields"] == [{"field": "factor", "message": "must be one of 1, 2, 4"}]
