"""Each GPU worker publishes what its ComfyUI offers (node classes, model files), read from /object_info when it
starts and every CAPABILITIES_INTERVAL seconds; /readyz and the fleet show it; a stopped worker's entry goes."""
from __future__ import annotations

from comfysim.catalogue import NODES, OPTIONAL_NODES
from testkit.waiting import eventually


def checkpoints_of(core, worker) -> list[str] | None:
    capabilities = core.fleet.capabilities(worker.name)
    return None if capabilities is None else sorted(capabilities.models["checkpoints"])


def test_each_worker_publishes_its_own_gpus_models_when_it_starts(core, make_app, start_simulator, start_worker):
    """With the shipped interval (300 s): what is published is what each worker read at start."""
    sims = [start_simulator(checkpoints="sd15.safetensors,sdxl.safetensors"),
            start_simulator(checkpoints="flux.safetensors", custom_nodes="ImageSharpen")]
    workers = [start_worker(sim, gpu=gpu) for gpu, sim in enumerate(sims)]
    eventually(lambda: all(checkpoints_of(core, worker) for worker in workers), timeout=10)
    assert checkpoints_of(core, workers[0]) == ["sd15.safetensors", "sdxl.safetensors"]
    assert checkpoints_of(core, workers[1]) == ["flux.safetensors"]
    assert core.fleet.capabilities(workers[0].name).node_classes == set(NODES) - set(OPTIONAL_NODES)
    assert core.fleet.capabilities(workers[1].name).node_classes == set(NODES)

    ready = {worker["name"]: worker for worker in make_app().test_client().get("/readyz").json["workers"]}
    assert ready[workers[1].name]["capabilities"] == {"checkpoints": ["flux.safetensors"], "loras": [], "vae": [],
                                                      "upscale_models": [], "node_classes": len(NODES)}

    workers[1].stop()
    assert core.fleet.capabilities(workers[1].name) is None, "a stopped worker's capabilities are withdrawn"


def test_a_model_added_to_comfyui_is_published_at_the_next_refresh(core, start_simulator, start_worker):
    sim = start_simulator(checkpoints="sd15.safetensors")
    worker = start_worker(sim, CAPABILITIES_INTERVAL=1)
    eventually(lambda: checkpoints_of(core, worker) == ["sd15.safetensors"], timeout=10)
    sim.set(checkpoints=["sd15.safetensors", "new.safetensors"])
    eventually(lambda: checkpoints_of(core, worker) == ["new.safetensors", "sd15.safetensors"], timeout=10)


def test_a_job_no_gpu_can_run_is_refused_naming_what_is_missing(core, make_app, start_simulator, start_worker):
    client = make_app().test_client()
    fox = {"prompt": "fox", "width": 64, "height": 64, "steps": 1}
    assert client.post("/api/jobs", json={**fox, "checkpoint": "sd15.safetensors"}).status_code == 202, \
        "with no GPU known yet, a job waits for one"
    workers = [start_worker(start_simulator(checkpoints=names), gpu=gpu)
               for gpu, names in enumerate(["sd15.safetensors", "sdxl.safetensors"])]
    eventually(lambda: all(checkpoints_of(core, worker) for worker in workers), timeout=10)
    fresh = make_app().test_client()  # a process that has not read the GPUs' capabilities before

    recorded = core.records.recent(100)
    refused = fresh.post("/api/jobs", json={**fox, "checkpoint": "flux.safetensors"})
    assert refused.status_code == 422 and refused.json["error"]["code"] == "no_capable_gpu"
    assert [field["field"] for field in refused.json["error"]["fields"]] == ["checkpoint"]
    assert "'flux.safetensors'" in refused.json["error"]["fields"][0]["message"]
    assert core.records.recent(100) == recorded, "a refused job leaves no record"
    for name in ("sd15.safetensors", "sdxl.safetensors"):
        assert fresh.post("/api/jobs", json={**fox, "checkpoint": name}).status_code == 202
