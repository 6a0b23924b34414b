"""Turning a job request into a ComfyUI API-format graph, from the template files in app/templates/.

Templates are real graphs (they load in ComfyUI); nodes are found by their `_meta.title`, so an operator can
swap a template for another graph with the same titles."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from app.request import JobRequest

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@functools.lru_cache(maxsize=None)
def load_template(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATE_DIR / f"{name}.json").read_text(encoding="utf-8"))


def node_titles(graph: dict[str, Any]) -> dict[str, str]:
    return {node_id: node.get("_meta", {}).get("title", node["class_type"]) for node_id, node in graph.items()}


def _node_id(graph: dict[str, Any], title: str) -> str:
    for node_id, node in graph.items():
        if node.get("_meta", {}).get("title") == title:
            return node_id
    raise KeyError(f"template has no node titled {title!r}")


def _node(graph: dict[str, Any], title: str) -> dict[str, Any]:
    return graph[_node_id(graph, title)]


def _new_node_id(graph: dict[str, Any]) -> str:
    return str(max((int(node_id) for node_id in graph if node_id.isdigit()), default=0) + 1)


def build_workflow(request: JobRequest, job_id: str, input_image_name: str | None = None) -> dict[str, Any]:
    graph = copy.deepcopy(load_template(request.template))
    _node(graph, "Load checkpoint")["inputs"]["ckpt_name"] = request.checkpoint
    _node(graph, "Positive prompt")["inputs"]["text"] = request.prompt
    _node(graph, "Negative prompt")["inputs"]["text"] = request.negative_prompt
    _node(graph, "Sampler")["inputs"].update(seed=request.seed, steps=request.steps, cfg=request.cfg,
                                            sampler_name=request.sampler, scheduler=request.scheduler)
    _node(graph, "Save image")["inputs"]["filename_prefix"] = f"text2img/{job_id}"
    if request.template == "img2img":
        _node(graph, "Input image")["inputs"]["image"] = input_image_name
        _node(graph, "Resize input")["inputs"].update(width=request.width, height=request.height)
        _node(graph, "Sampler")["inputs"]["denoise"] = request.strength
        # A batch of img2img is the same input encoded batch_size times: ComfyUI's RepeatLatentBatch.
        if request.batch_size > 1:
            repeat = _new_node_id(graph)
            graph[repeat] = {"class_type": "RepeatLatentBatch", "_meta": {"title": "Repeat input"},
                             "inputs": {"samples": [_node_id(graph, "Encode input"), 0],
                                        "amount": request.batch_size}}
            _node(graph, "Sampler")["inputs"]["latent_image"] = [repeat, 0]
    else:
        _node(graph, "Empty latent")["inputs"].update(width=request.width, height=request.height,
                                                      batch_size=request.batch_size)
    return graph
