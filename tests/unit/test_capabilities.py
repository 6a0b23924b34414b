"""What a GPU can run, read from ComfyUI's /object_info: node classes, and the model files its loaders list."""
from __future__ import annotations

import json

import pytest

from app.capabilities import Capabilities, combo_options
from app.routing import NoCapableGPU, check_runnable
from app.settings import Settings

# Shapes as ComfyUI 0.3.64 serves them: a loader's file list first ([choices, options]), or a newer-schema COMBO.
OBJECT_INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["sd15.safetensors", "sdxl.safetensors"], {"tooltip": "The name of the checkpoint"}]}}},
    "LoraLoader": {"input": {"required": {"model": ["MODEL"], "clip": ["CLIP"],
                                          "lora_name": [["detail.safetensors"], {}],
                                          "strength_model": ["FLOAT", {"default": 1.0}]}}},
    "VAELoader": {"input": {"required": {"vae_name": [["taesd", "vae-ft-mse.safetensors"]]}}},
    "UpscaleModelLoader": {"input": {"required": {
        "model_name": ["COMBO", {"options": ["4x-UltraSharp.pth"], "multiselect": False}]}}},
    "KSampler": {"input": {"required": {"sampler_name": [["euler", "heun"], {}]}}},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}},
}


def test_model_files_are_read_from_the_loaders_inputs():
    capabilities = Capabilities.from_object_info(OBJECT_INFO)
    assert capabilities.models == {"checkpoints": {"sd15.safetensors", "sdxl.safetensors"},
                                   "loras": {"detail.safetensors"}, "vae": {"taesd", "vae-ft-mse.safetensors"},
                                   "upscale_models": {"4x-UltraSharp.pth"}}
    assert capabilities.node_classes == set(OBJECT_INFO)


def test_a_comfyui_without_a_loader_has_no_models_of_its_kind():
    capabilities = Capabilities.from_object_info({"SaveImage": OBJECT_INFO["SaveImage"]})
    assert capabilities.models["loras"] == frozenset() and capabilities.node_classes == {"SaveImage"}


def test_combo_options_of_both_shapes_and_of_inputs_that_are_not_combos():
    assert combo_options([["a", "b"], {}]) == ["a", "b"]
    assert combo_options(["COMBO", {"options": ["c"]}]) == ["c"]
    assert combo_options(["INT", {"default": 1}]) == [] and combo_options(None) == [] and combo_options([]) == []


def test_capabilities_travel_as_json_unchanged():
    capabilities = Capabilities.from_object_info(OBJECT_INFO)
    assert Capabilities.from_dict(json.loads(capabilities.to_json())) == capabilities
    assert capabilities.summary()["node_classes"] == len(OBJECT_INFO)


def test_the_shipped_refresh_is_every_five_minutes():
    assert Settings.from_env({}).capabilities_interval == 300


GRAPH = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
         "5": {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors", "model": ["4", 0]}},
         "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
         "8": {"class_type": "FancyDecode", "inputs": {}}}


def test_a_graph_needs_its_node_classes_and_the_files_its_loaders_name():
    needs = Capabilities.needed_by(GRAPH)
    assert needs.node_classes == {"CheckpointLoaderSimple", "LoraLoader", "SaveImage", "FancyDecode"}
    assert needs.models["checkpoints"] == {"sdxl.safetensors"} and needs.models["loras"] == {"detail.safetensors"}


def test_what_a_gpu_lacks_for_a_graph():
    gpu = Capabilities.from_object_info(OBJECT_INFO)
    assert gpu.lacks(Capabilities.needed_by(GRAPH)) == {"node_classes": ["FancyDecode"]}
    assert gpu.lacks(Capabilities.needed_by({"9": GRAPH["9"]})) == {}


class KnownGPUs:
    def __init__(self, **gpus: Capabilities):
        self.gpus = gpus

    def known_capabilities(self) -> dict[str, Capabilities]:
        return self.gpus


def test_a_job_is_refused_only_when_every_known_gpu_lacks_something():
    sdxl_gpu = Capabilities(frozenset(node["class_type"] for node in GRAPH.values()),
                            {"checkpoints": frozenset({"sdxl.safetensors"}), "loras": frozenset({"detail.safetensors"})})
    check_runnable(KnownGPUs(), GRAPH)  # no GPU known yet: the job waits for one
    check_runnable(KnownGPUs(a=Capabilities.from_object_info(OBJECT_INFO), b=sdxl_gpu), GRAPH)
    with pytest.raises(NoCapableGPU) as refused:
        check_runnable(KnownGPUs(a=Capabilities.from_object_info(OBJECT_INFO)), {
            **GRAPH, "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux.safetensors"}}})
    assert [error["field"] for error in refused.value.errors] == ["checkpoint", "template"]
    assert "'flux.safetensors'" in refused.value.errors[0]["message"]
    assert "FancyDecode" in refused.value.errors[1]["message"]
