"""What a GPU can run: the node classes its ComfyUI offers and the model files it has, read from ComfyUI's
`GET /object_info`. A worker publishes its GPU's capabilities (app/fleet.py); routing a job to a GPU that can run
it compares them with what the job's graph needs."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

# The loader inputs that name a model file, and the model folder they list (ComfyUI's folder_paths names).
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
}
MODEL_FOLDERS = ("checkpoints", "loras", "vae", "upscale_models")


def combo_options(spec: Any) -> list[str]:
    """The choices of a COMBO input spec: `[[choices...], {...}]`, or `["COMBO", {"options": [...]}]` (nodes
    written with ComfyUI's newer node schema)."""
    if not isinstance(spec, list) or not spec:
        return []
    if isinstance(spec[0], list):
        return [str(option) for option in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(option) for option in spec[1].get("options") or []]
    return []


@dataclass(frozen=True)
class Missing:
    """Something a graph needs that a GPU lacks: a node class (input_name None), a required input, or a model
    file named by a loader's input."""
    node_id: str
    class_type: str
    input_name: str | None
    what: str


@dataclass(frozen=True)
class Capabilities:
    node_classes: frozenset[str] = frozenset()
    models: Mapping[str, frozenset[str]] = field(default_factory=dict)  # folder -> file names
    required_inputs: Mapping[str, frozenset[str]] = field(default_factory=dict)  # node class -> its required inputs

    @classmethod
    def from_object_info(cls, info: Mapping[str, Any]) -> "Capabilities":
        models: dict[str, set[str]] = {folder: set() for folder in MODEL_FOLDERS}
        for (node_class, input_name), folder in MODEL_INPUTS.items():
            models[folder].update(combo_options(_required(info, node_class).get(input_name)))
        return cls(frozenset(info), {folder: frozenset(names) for folder, names in models.items()},
                   {node_class: frozenset(_required(info, node_class)) for node_class in info})

    @classmethod
    def union(cls, many: Iterable["Capabilities"]) -> "Capabilities":
        """What the GPUs offer together."""
        many = list(many)
        required: dict[str, frozenset[str]] = {}
        for capabilities in many:
            required.update(capabilities.required_inputs)
        return cls(frozenset().union(*(c.node_classes for c in many)),
                   {folder: frozenset().union(*(c.models.get(folder, frozenset()) for c in many))
                    for folder in MODEL_FOLDERS}, required)

    def to_dict(self) -> dict[str, Any]:
        return {"node_classes": sorted(self.node_classes),
                **{folder: sorted(self.models.get(folder, ())) for folder in MODEL_FOLDERS},
                "required_inputs": {name: sorted(inputs) for name, inputs in sorted(self.required_inputs.items())}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Capabilities":
        return cls(frozenset(data.get("node_classes") or ()),
                   {folder: frozenset(data.get(folder) or ()) for folder in MODEL_FOLDERS},
                   {name: frozenset(inputs) for name, inputs in (data.get("required_inputs") or {}).items()})

    def missing_in(self, graph: Mapping[str, Any]) -> list[Missing]:
        """What an API-format graph needs that this GPU lacks, node by node (in node id order)."""
        missing = []
        for node_id, node in sorted(graph.items(), key=lambda item: _node_order(item[0])):
            node_class, inputs = node.get("class_type"), node.get("inputs") or {}
            if node_class not in self.node_classes:
                missing.append(Missing(node_id, node_class, None, f"the node class {node_class}"))
                continue
            missing += [Missing(node_id, node_class, name, f"its required input {name}")
                        for name in sorted(self.required_inputs.get(node_class, ())) if name not in inputs]
            for input_name, value in inputs.items():
                folder = MODEL_INPUTS.get((node_class, input_name))
                if folder is not None and isinstance(value, str) and value not in self.models.get(folder, ()):
                    missing.append(Missing(node_id, node_class, input_name, f"the {folder} file {value!r}"))
        return missing

    def offers(self) -> set[str]:
        """What this GPU offers, in the words of `needs_of`."""
        return {f"node:{name}" for name in self.node_classes} | {
            f"{folder}:{name}" for folder, names in self.models.items() for name in names}

    def summary(self) -> dict[str, Any]:
        """For operators: every model file by folder, and how many node classes."""
        return {**{folder: sorted(self.models.get(folder, ())) for folder in MODEL_FOLDERS},
                "node_classes": len(self.node_classes)}


def needs_of(graph: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """What a GPU must offer to run `graph` (`node:<class>` and `<model folder>:<file>`), and the checkpoint it
    loads first ("" for none)."""
    needs, checkpoints = set(), []
    for node in graph.values():
        node_class = node.get("class_type")
        needs.add(f"node:{node_class}")
        for input_name, value in (node.get("inputs") or {}).items():
            folder = MODEL_INPUTS.get((node_class, input_name))
            if folder is not None and isinstance(value, str):
                needs.add(f"{folder}:{value}")
                if folder == "checkpoints":
                    checkpoints.append(value)
    return tuple(sorted(needs)), (checkpoints[0] if checkpoints else "")


def _required(info: Mapping[str, Any], node_class: str) -> dict[str, Any]:
    required = ((info.get(node_class) or {}).get("input") or {}).get("required") or {}
    return required if isinstance(required, dict) else {}


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (2 ** 63, node_id)
