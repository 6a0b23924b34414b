"""What a GPU can run, read from ComfyUI's /object_info: node classes, and the model files its loaders list."""
from __future__ import annotations

import json

import pytest

from app.capabilities import Capabilities, Missing, combo_options
from app.request import parse_request
from app.templates import Templates
from app.validation import RequestLimits
from comfysim.catalogue import NODES, combo_lists
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


def test_what_a_gpu_lacks_for_a_graph_node_by_node():
    gpu = Capabilities.from_object_info(OBJECT_INFO)
    assert gpu.required_inputs["LoraLoader"] == {"model", "clip", "lora_name", "strength_model"}
    assert gpu.missing_in(GRAPH) == [
        Missing("5", "LoraLoader", "clip", "its required input clip"),
        Missing("5", "LoraLoader", "strength_model", "its required input strength_model"),
        Missing("8", "FancyDecode", None, "the node class FancyDecode")]
    assert gpu.missing_in({"9": GRAPH["9"]}) == []
    assert gpu.missing_in({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.ckpt"}}}) == [
        Missing("4", "CheckpointLoaderSimple", "ckpt_name", "the checkpoints file 'x.ckpt'")]


class KnownGPUs:
    def __init__(self, **gpus: Capabilities):
        self.gpus = gpus

    def known_capabilities(self) -> dict[str, Capabilities]:
        return self.gpus


def raw(graph):
    return parse_request({"workflow": graph}, RequestLimits(), Templates(), raw_allowed=True)


def fields(refused) -> dict[str, str]:
    return {error["field"]: error["message"] for error in refused.value.errors}


def simulator_object_info(checkpoints: list[str]) -> dict:
    return {name: spec.object_info(combo_lists(checkpoints, [])) for name, spec in NODES.items()}


LORA = {"model": ["4", 0], "clip": ["4", 1], "strength_model": 1.0}


def test_a_job_is_refused_only_when_every_known_gpu_lacks_something():
    graph = {**GRAPH, "5": {"class_type": "LoraLoader", "inputs": {**GRAPH["5"]["inputs"], **LORA}}}
    sdxl_gpu = Capabilities(frozenset(node["class_type"] for node in graph.values()),
                            {"checkpoints": frozenset({"sdxl.safetensors"}), "loras": frozenset({"detail.safetensors"})})
    check_runnable(KnownGPUs(), raw(graph), graph)  # no GPU known yet: the job waits for one
    check_runnable(KnownGPUs(a=Capabilities.from_object_info(OBJECT_INFO), b=sdxl_gpu), raw(graph), graph)
    flux = {**graph, "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux.safetensors"}}}
    with pytest.raises(NoCapableGPU) as refused:
        check_runnable(KnownGPUs(a=Capabilities.from_object_info(OBJECT_INFO), b=sdxl_gpu), raw(flux), flux)
    assert fields(refused) == {"workflow.4.inputs.ckpt_name": "no GPU can run this job: node 4 "
                               "(CheckpointLoaderSimple) needs the checkpoints file 'flux.safetensors', which none of "
                               "the 2 GPU(s) has"}


def test_everything_each_gpu_has_but_no_single_gpu_has_all_is_refused_naming_the_closest_gpus_gap():
    sd15_gpu = Capabilities.from_object_info(OBJECT_INFO)
    fancy_gpu = Capabilities(frozenset({"FancyDecode", "SaveImage"}), {})
    graph = {"4": GRAPH["4"], "8": GRAPH["8"], "9": GRAPH["9"]}
    with pytest.raises(NoCapableGPU) as refused:
        check_runnable(KnownGPUs(a=sd15_gpu, b=fancy_gpu), raw(graph), graph)
    assert fields(refused) == {"workflow.8.class_type": "no single GPU has everything this job needs: node 8 "
                               "(FancyDecode) needs the node class FancyDecode, missing on the closest of 2 GPU(s)"}


def test_a_template_jobs_gap_is_named_by_the_parameter_that_chose_it():
    request = parse_request({"prompt": "fox", "checkpoint": "flux.safetensors"}, RequestLimits(), Templates())
    gpu = Capabilities.from_object_info(simulator_object_info(["sd15.safetensors"]))
    with pytest.raises(NoCapableGPU) as refused:
        check_runnable(KnownGPUs(a=gpu), request, request.graph("job"))
    assert list(fields(refused)) == ["checkpoint"]
    sd15 = request.with_values(checkpoint="sd15.safetensors")
    check_runnable(KnownGPUs(a=gpu), sd15, sd15.graph("job"))
