"""What a GPU can run: the node classes its ComfyUI offers and the model files it has, read from ComfyUI's
`GET /object_info`. A worker publishes its GPU's capabilities (app/fleet.py); routing a job to a GPU that can run
it compares them with what the job's graph needs."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

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
class Capabilities:
    node_classes: frozenset[str] = frozenset()
    models: Mapping[str, frozenset[str]] = field(default_factory=dict)  # folder -> file names

    @classmethod
    def from_object_info(cls, info: Mapping[str, Any]) -> "Capabilities":
        models: dict[str, set[str]] = {folder: set() for folder in MODEL_FOLDERS}
        for (node_class, input_name), folder in MODEL_INPUTS.items():
            required = ((info.get(node_class) or {}).get("input") or {}).get("required") or {}
            models[folder].update(combo_options(required.get(input_name)))
        return cls(frozenset(info), {folder: frozenset(names) for folder, names in models.items()})

    def to_dict(self) -> dict[str, list[str]]:
        return {"node_classes": sorted(self.node_classes),
                **{folder: sorted(self.models.get(folder, ())) for folder in MODEL_FOLDERS}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Capabilities":
        return cls(frozenset(data.get("node_classes") or ()),
                   {folder: frozenset(data.get(folder) or ()) for folder in MODEL_FOLDERS})

    @classmethod
    def needed_by(cls, graph: Mapping[str, Any]) -> "Capabilities":
        """What an API-format graph needs: its node classes, and the model files its loaders name."""
        classes: set[str] = set()
        models: dict[str, set[str]] = {folder: set() for folder in MODEL_FOLDERS}
        for node in graph.values():
            node_class = node.get("class_type")
            classes.add(node_class)
            for input_name, value in (node.get("inputs") or {}).items():
                folder = MODEL_INPUTS.get((node_class, input_name))
                if folder is not None and isinstance(value, str):
                    models[folder].add(value)
        return cls(frozenset(classes), {folder: frozenset(names) for folder, names in models.items()})

    def lacks(self, needs: "Capabilities") -> dict[str, list[str]]:
        """What of `needs` this GPU does not have: {"node_classes" or a model folder: [names]}."""
        lacking = {folder: sorted(needs.models.get(folder, frozenset()) - self.models.get(folder, frozenset()))
                   for folder in MODEL_FOLDERS}
        lacking["node_classes"] = sorted(needs.node_classes - self.node_classes)
        return {kind: names for kind, names in lacking.items() if names}

    def summary(self) -> dict[str, Any]:
        """For operators: every model file by folder, and how many node classes."""
        return {**{folder: sorted(self.models.get(folder, ())) for folder in MODEL_FOLDERS},
                "node_classes": len(self.node_classes)}
