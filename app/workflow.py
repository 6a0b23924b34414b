"""ComfyUI API-format graphs ({node id: {"class_type", "inputs", "_meta"}}): their shape, their titles, and the one
change every job's graph gets (its images are saved under the job's id)."""
from __future__ import annotations

from typing import Any, Mapping

SAVE_PREFIX = "text2img"


def node_titles(graph: Mapping[str, Any]) -> dict[str, str]:
    return {node_id: (node.get("_meta") or {}).get("title", node["class_type"]) for node_id, node in graph.items()}


def node_ids_by_title(graph: Mapping[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        title = (node.get("_meta") or {}).get("title")
        if title is not None:
            found.setdefault(title, []).append(node_id)
    return found


def save_under_job(graph: dict[str, Any], job_id: str) -> dict[str, Any]:
    """Every SaveImage node saves under text2img/<job id>, so a job's files on the GPU host are known."""
    for node in graph.values():
        if node.get("class_type") == "SaveImage":
            node.setdefault("inputs", {})["filename_prefix"] = f"{SAVE_PREFIX}/{job_id}"
    return graph


def is_link(value: Any) -> bool:
    """An input fed by another node's output: [node id, output index]."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and \
        isinstance(value[1], int) and not isinstance(value[1], bool)


def shape_errors(graph: Any, max_nodes: int) -> list[dict[str, str]]:
    """What makes `graph` not an API-format workflow (each error names the node and input); [] if none."""
    if not isinstance(graph, dict) or not graph:
        return [{"field": "workflow", "message": "must be a non-empty object of nodes: {node id: {class_type, "
                                                 "inputs}} (ComfyUI's API format)"}]
    if len(graph) > max_nodes:
        return [{"field": "workflow", "message": f"must have at most {max_nodes} nodes (got {len(graph)})"}]
    errors = []
    for node_id, node in graph.items():
        where = f"workflow.{str(node_id)[:64]}"
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or \
                not isinstance(node.get("inputs", {}), dict):
            errors.append({"field": where, "message": "must be {\"class_type\": string, \"inputs\": object}"})
            continue
        for input_name, value in node.get("inputs", {}).items():
            if is_link(value) and value[0] not in graph:
                errors.append({"field": f"{where}.inputs.{input_name}",
                               "message": f"node {node_id} ({node['class_type']}): input {input_name} links to "
                                          f"node {value[0][:64]!r}, which is not in the workflow"})
    return errors
