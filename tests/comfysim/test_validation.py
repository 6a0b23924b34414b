"""POST /prompt rejects what ComfyUI 0.3.64 rejects, with the same bodies (the recordings are the reference)."""
from __future__ import annotations

import json

import pytest
import requests

from tests.traces import TRACES_DIR as TRACES


def _without_tracebacks(value):
    if isinstance(value, dict):
        return {k: "<traceback>" if k == "traceback" else _without_tracebacks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value


def recorded_rejections() -> list[tuple[str, dict, int, object]]:
    """(case, request body, status, answer) of every POST /prompt in the invalid_workflows recording."""
    cases, note = [], ""
    for line in (TRACES / "invalid_workflows.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "note":
            note = event["text"]
        elif event["kind"] == "http" and event["path"] == "/prompt":
            workflow = TRACES / "workflows" / f"{note}.json"
            if "request" in event:
                body = event["request"]
            elif "request_raw" in event:
                body = event["request_raw"]
            else:
                body = {"prompt": json.loads(workflow.read_text())}
            cases.append((note, body, event["status"], event.get("body", event.get("body_text"))))
    return cases


@pytest.mark.parametrize("case,body,status,answer", recorded_rejections(), ids=[c[0] for c in recorded_rejections()])
def test_rejections_match_the_recording(simulator, case, body, status, answer):
    if isinstance(body, str):
        response = requests.post(simulator.url + "/prompt", data=body, timeout=5)
    else:
        response = requests.post(simulator.url + "/prompt", json=body, timeout=5)
    assert response.status_code == status
    if isinstance(answer, str):
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.text == answer
    else:
        assert _without_tracebacks(response.json()) == _without_tracebacks(answer)


def test_a_valid_graph_is_accepted_with_the_callers_prompt_id(simulator):
    graph = json.loads((TRACES / "workflows" / "core_image.json").read_text())
    first = requests.post(simulator.url + "/prompt", json={"prompt": graph, "prompt_id": "job-1"}, timeout=5).json()
    again = requests.post(simulator.url + "/prompt", json={"prompt": graph, "prompt_id": "job-1"}, timeout=5).json()
    assert (first["prompt_id"], again["prompt_id"]) == ("job-1", "job-1")
    assert again["number"] == first["number"] + 1 and first["node_errors"] == {}


def test_unknown_checkpoint_is_not_in_list(simulator):
    graph = json.loads((TRACES / "workflows" / "sd15_random_ksampler.json").read_text())
    graph["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    body = requests.post(simulator.url + "/prompt", json={"prompt": graph}, timeout=5).json()
    error = body["node_errors"]["4"]["errors"][0]
    assert error["type"] == "value_not_in_list" and "missing.safetensors" in error["details"]
    assert body["node_errors"]["4"]["dependent_outputs"] == ["9"]
