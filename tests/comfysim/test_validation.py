"""POST /prompt rejects what ComfyUI 0.3.64 rejects, with the same bodies (the recordings are the reference)."""
from __future__ import annotations

import pytest
import requests

from testkit.recordings import Recording, load_recording, load_workflow


def _without_tracebacks(value):
    if isinstance(value, dict):
        return {k: "<traceback>" if k == "traceback" else _without_tracebacks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value


def recorded_rejections() -> list[tuple[str, dict | str, int, object]]:
    """(case, request body, status, answer) of every POST /prompt in the invalid_workflows recording."""
    recording = load_recording("invalid_workflows")
    cases = []
    for index, event in enumerate(recording.events):
        if event["kind"] == "http" and event["path"] == "/prompt":
            answer = event.get("body", event.get("body_text"))
            cases.append((recording.note_before(index), posted_body(recording, index), event["status"], answer))
    return cases


def posted_body(recording: Recording, index: int) -> dict | str:
    """What the recorder posted: the body it recorded, else the workflow its note named."""
    event = recording.events[index]
    if "request" in event:
        return event["request"]
    if "request_raw" in event:
        return event["request_raw"]
    _, graph = recording.named_workflow(index)
    return {"prompt": graph}


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
    graph = load_workflow("core_image.json")
    first = requests.post(simulator.url + "/prompt", json={"prompt": graph, "prompt_id": "job-1"}, timeout=5).json()
    again = requests.post(simulator.url + "/prompt", json={"prompt": graph, "prompt_id": "job-1"}, timeout=5).json()
    assert (first["prompt_id"], again["prompt_id"]) == ("job-1", "job-1")
    assert again["number"] == first["number"] + 1 and first["node_errors"] == {}


def test_unknown_checkpoint_is_not_in_list(simulator):
    graph = load_workflow("sd15_random_ksampler.json")
    graph["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    body = requests.post(simulator.url + "/prompt", json={"prompt": graph}, timeout=5).json()
    error = body["node_errors"]["4"]["errors"][0]
    assert error["type"] == "value_not_in_list" and "missing.safetensors" in error["details"]
    assert body["node_errors"]["4"]["dependent_outputs"] == ["9"]
