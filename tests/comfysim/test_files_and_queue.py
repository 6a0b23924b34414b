"""Files (SaveImage naming, /view, /upload/image) and the queue (front, delete, clear, history) as ComfyUI does them."""
from __future__ import annotations

import requests

from testkit.images import image_bytes, image_size
from testkit.services import SimulatorProcess
from testkit.waiting import eventually
from tests import graphs


def post(sim, graph, **extra) -> str:
    response = requests.post(sim.url + "/prompt", json={"prompt": graph, **extra}, timeout=5)
    response.raise_for_status()
    return response.json()["prompt_id"]


def wait_done(sim: SimulatorProcess, prompt_id: str, timeout: float = 20) -> dict:
    """The prompt's history entry, once it has one."""
    def entry() -> dict | None:
        return requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json().get(prompt_id)
    return eventually(entry, timeout, lambda: f"{prompt_id} did not finish")


def test_save_image_counts_on_and_serves_real_pngs(simulator):
    first = wait_done(simulator, post(simulator, graphs.txt2img(batch_size=2, prefix="fox/run")))
    second = wait_done(simulator, post(simulator, graphs.txt2img(seed=9, prefix="fox/run")))
    names = [i["filename"] for i in first["outputs"]["9"]["images"] + second["outputs"]["9"]["images"]]
    assert names == ["run_00001_.png", "run_00002_.png", "run_00003_.png"]
    image = second["outputs"]["9"]["images"][0]
    assert image == {"filename": "run_00003_.png", "subfolder": "fox", "type": "output"}
    response = requests.get(simulator.url + "/view", params=image, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    assert image_size(response.content) == (64, 64)
    assert second["status"] == {"status_str": "success", "completed": True, "messages": second["status"]["messages"]}
    assert [m[0] for m in second["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]


def test_view_refuses_traversal_and_unknown_files(simulator):
    view = simulator.url + "/view"
    assert requests.get(view, params={"filename": "../../etc/passwd", "type": "output"}, timeout=5).status_code == 400
    assert requests.get(view, params={"filename": "nope.png", "type": "output"}, timeout=5).status_code == 404
    assert requests.get(view, params={"filename": "a.png", "subfolder": "../..", "type": "output"}, timeout=5).status_code == 403


def test_upload_keeps_both_files_when_names_clash(simulator):
    upload = simulator.url + "/upload/image"
    one, another = image_bytes((8, 8), (10, 20, 30)), image_bytes((8, 8), (1, 2, 3))
    first = requests.post(upload, files={"image": ("in.png", one)}, timeout=5).json()
    same = requests.post(upload, files={"image": ("in.png", one)}, timeout=5).json()
    other = requests.post(upload, files={"image": ("in.png", another)}, timeout=5).json()
    replaced = requests.post(upload, files={"image": ("in.png", another)}, data={"overwrite": "true"}, timeout=5).json()
    assert [first["name"], same["name"], other["name"], replaced["name"]] == ["in.png", "in.png", "in (1).png", "in.png"]
    assert first == {"name": "in.png", "subfolder": "", "type": "input"}
    assert requests.post(upload, data={"subfolder": "x"}, timeout=5).status_code == 400


def test_front_delete_and_clear_act_on_pending_prompts_only(simulator):
    running = post(simulator, graphs.slow(steps=40, step_seconds=0.02, seed=1))
    later = post(simulator, graphs.slow(steps=1, seed=2))
    urgent = post(simulator, graphs.slow(steps=1, seed=3), front=True)
    queue = requests.get(simulator.url + "/queue", timeout=5).json()
    pending = [item[1] for item in sorted(queue["queue_pending"], key=lambda item: item[0])]
    assert pending == [urgent, later] and [item[1] for item in queue["queue_running"]] == [running]
    requests.post(simulator.url + "/queue", json={"delete": [later, running]}, timeout=5)
    queue = requests.get(simulator.url + "/queue", timeout=5).json()
    assert [item[1] for item in queue["queue_pending"]] == [urgent] and len(queue["queue_running"]) == 1
    requests.post(simulator.url + "/queue", json={"clear": True}, timeout=5)
    assert requests.get(simulator.url + "/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 1}}
    assert wait_done(simulator, running)["status"]["status_str"] == "success"
    assert requests.get(f"{simulator.url}/history/{later}", timeout=5).json() == {}


def test_history_pages_and_deletes(simulator):
    ids = [post(simulator, graphs.slow(steps=1, seed=s, step_seconds=0)) for s in range(3)]
    wait_done(simulator, ids[-1])
    assert list(requests.get(simulator.url + "/history", params={"max_items": 2}, timeout=5).json()) == ids[1:]
    requests.post(simulator.url + "/history", json={"delete": [ids[0]]}, timeout=5)
    assert list(requests.get(simulator.url + "/history", timeout=5).json()) == ids[1:]
    requests.post(simulator.url + "/history", json={"clear": True}, timeout=5)
    assert requests.get(simulator.url + "/history", timeout=5).json() == {}


def test_runtime_settings_change_faults_and_reject_unknown_names(simulator):
    assert simulator.set(fail_node="VAEDecode", fail_exception="torch.OutOfMemoryError: CUDA out of memory")["fail_node"] == "VAEDecode"
    entry = wait_done(simulator, post(simulator, graphs.txt2img()))
    error = entry["status"]["messages"][-1]
    assert error[0] == "execution_error"
    assert (error[1]["node_type"], error[1]["exception_type"]) == ("VAEDecode", "torch.OutOfMemoryError")
    response = requests.post(simulator.url + "/sim/settings", json={"no_such": 1}, timeout=5)
    assert response.status_code == 400 and "no_such" in response.json()["error"]
