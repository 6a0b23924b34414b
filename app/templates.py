"""Workflow templates: ComfyUI API-format graphs in TEMPLATES_DIR, each with the parameters a request fills.

A template is `<name>.json`, the graph as ComfyUI's "Export (API)" writes it (it loads in ComfyUI as it is), and
beside it `<name>.params.json`, which declares the template's parameters (app/params.py):

    {"description": "Text to image", "pixels": ["width", "height"],
     "params": [{"name": "prompt", "type": "text", "required": true, "fills": ["Positive prompt.text"]}, ...]}

Each parameter fills inputs of nodes found by their `_meta.title`. `pixels` names the two parameters whose product
MAX_PIXELS caps. A graph without a declarations file is a template without parameters. Every SaveImage node saves
under `text2img/<job id>`.

The directory is read again when a file in it is added, changed or removed (looked at at most every
RELOAD_INTERVAL seconds), so a new template is offered without a restart. A template whose files are wrong is
left out, with an error in the log naming the problem."""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from app.params import Param, TemplateInvalid
from app.validation import FieldChecker, RequestLimits
from app.workflow import node_ids_by_title, save_under_job

log = logging.getLogger("app.templates")

SHIPPED_DIR = Path(__file__).resolve().parent / "templates"
DECLARATIONS = ".params.json"
RELOAD_INTERVAL = 1.0


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    graph: Mapping[str, Any]
    params: Mapping[str, Param]
    pixels: tuple[str, str] | None = None

    @classmethod
    def load(cls, name: str, graph: Any, declarations: Any) -> "Template":
        if not isinstance(graph, dict) or not graph or not all(
                isinstance(node, dict) and "class_type" in node for node in graph.values()):
            raise TemplateInvalid("the graph must be a ComfyUI API-format workflow: {node id: {class_type, inputs}}")
        declarations = declarations if declarations is not None else {}
        if not isinstance(declarations, dict) or not isinstance(declarations.get("params", []), list):
            raise TemplateInvalid(f"{name}{DECLARATIONS} must be an object with a `params` list")
        params = {param.name: param for param in map(Param.declared, declarations.get("params", []))}
        pixels = declarations.get("pixels")
        template = cls(name, str(declarations.get("description", "")), graph, params,
                       tuple(pixels) if pixels else None)
        template._check_declarations()
        return template

    def _check_declarations(self) -> None:
        titles = node_ids_by_title(self.graph)
        for param in self.params.values():
            for title, input_name in param.fills:
                if len(titles.get(title, ())) != 1:
                    raise TemplateInvalid(f"parameter {param.name}: the graph has {len(titles.get(title, ()))} "
                                          f"nodes titled {title!r} (it needs exactly one)")
                if input_name not in self.graph[titles[title][0]].get("inputs", {}):
                    raise TemplateInvalid(f"parameter {param.name}: node {title!r} has no input {input_name!r}")
        if sum(param.type == "image" for param in self.params.values()) > 1:
            raise TemplateInvalid("a template takes at most one image parameter")
        if self.pixels and (len(self.pixels) != 2 or not set(self.pixels) <= set(self.params)):
            raise TemplateInvalid("`pixels` must name two of the template's parameters")

    @property
    def image_param(self) -> str | None:
        return next((name for name, param in self.params.items() if param.type == "image"), None)

    def param_filling(self, node_id: str, input_name: str | None) -> str | None:
        """The parameter that fills this input of the node, if any."""
        title = (self.graph.get(node_id, {}).get("_meta") or {}).get("title")
        return next((name for name, param in self.params.items() if (title, input_name) in param.fills), None)

    def check(self, checker: FieldChecker, limits: RequestLimits) -> dict[str, Any]:
        """The request's value of every parameter (defaults filled in); problems go to `checker`."""
        values = {name: param.check(checker, limits) for name, param in self.params.items()}
        if self.pixels:
            width, height = (values[name] for name in self.pixels)
            if isinstance(width, int) and isinstance(height, int) and width * height > limits.max_pixels:
                checker.fail(self.pixels[0], f"{' x '.join(self.pixels)} must be at most {limits.max_pixels} pixels")
        return values

    def fill(self, values: Mapping[str, Any], job_id: str, image_name: str | None = None) -> dict[str, Any]:
        """The graph to run: every parameter's value in the inputs it fills. image_name: the name ComfyUI gave the
        job's uploaded image (before the upload, the graph names the upload's id)."""
        graph = copy.deepcopy(dict(self.graph))
        titles = node_ids_by_title(graph)
        for name, param in self.params.items():
            value = image_name if param.type == "image" and image_name is not None else values.get(name)
            if value is None:
                continue
            for title, input_name in param.fills:
                graph[titles[title][0]]["inputs"][input_name] = value
        return save_under_job(graph, job_id)

    def describe(self, limits: RequestLimits) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "params": [param.describe(limits) for param in self.params.values()]}


class Templates:
    """The templates of one directory, read again when its files change.

    default: the template of a request that names none; default_for_image: of one that uploads an image and
    names none (DEFAULT_TEMPLATE, DEFAULT_IMAGE_TEMPLATE)."""

    def __init__(self, directory: Path | str = SHIPPED_DIR, default: str = "txt2img",
                 default_for_image: str = "img2img"):
        self.directory = Path(directory)
        self.default = default
        self.default_for_image = default_for_image
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._templates: dict[str, Template] = {}

    def get(self, name: str) -> Template | None:
        return self._current().get(name)

    def all(self) -> list[Template]:
        return [template for _, template in sorted(self._current().items())]

    def names(self) -> list[str]:
        return sorted(self._current())

    def _current(self) -> dict[str, Template]:
        with self._lock:
            if time.monotonic() - self._checked >= RELOAD_INTERVAL:
                self._checked = time.monotonic()
                signature = self._read_signature()
                if signature != self._signature:
                    self._signature, self._templates = signature, self._read()
            return self._templates

    def _read_signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = sorted(self.directory.glob("*.json"))
            return tuple((path.name, path.stat().st_mtime_ns, path.stat().st_size) for path in files)
        except OSError as exc:
            log.error("templates: cannot read %s: %s", self.directory, exc)
            return ()

    def _read(self) -> dict[str, Template]:
        templates = {}
        for path in sorted(self.directory.glob("*.json")):
            if path.name.endswith(DECLARATIONS):
                continue
            name = path.stem
            try:
                templates[name] = Template.load(name, _read_json(path), _declarations(path))
            except (OSError, ValueError) as exc:
                log.error("template %s (%s) is left out: %s", name, path, exc)
        log.info("templates in %s: %s", self.directory, ", ".join(templates) or "none")
        return templates


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _declarations(graph_path: Path) -> Any:
    path = graph_path.with_name(graph_path.stem + DECLARATIONS)
    return _read_json(path) if path.exists() else None
