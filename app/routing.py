"""Which GPUs can run a job: a job is refused at submit when GPUs have said what they offer
(app/capabilities.py) and none of them offers everything its graph needs."""
from __future__ import annotations

from typing import Any, Mapping

from app.capabilities import Capabilities, Missing
from app.fleet import Fleet
from app.request import JobRequest
from app.validation import RequestError


class NoCapableGPU(RequestError):
    """No known GPU can run the job (HTTP 422): `errors` names each thing none of them has, by the request field
    that chose it (a template's parameter, or the raw workflow's node and input)."""


def check_runnable(fleet: Fleet, request: JobRequest, graph: Mapping[str, Any]) -> None:
    """Raises NoCapableGPU unless one known GPU (online, or gone within a few refreshes) can run `graph`. With no
    GPU known yet, the job is accepted and waits for one."""
    known = fleet.known_capabilities()
    if not known:
        return
    per_gpu = [capabilities.missing_in(graph) for capabilities in known.values()]
    if any(not missing for missing in per_gpu):
        return
    nowhere = Capabilities.union(known.values()).missing_in(graph)
    shown = nowhere or min(per_gpu, key=len)
    raise NoCapableGPU([{"field": request.field_for(item.node_id, item.input_name),
                         "message": _message(item, bool(nowhere), len(known))} for item in shown])


def _message(item: Missing, nowhere: bool, gpus: int) -> str:
    node = f"node {item.node_id} ({item.class_type})"
    if nowhere:
        return f"no GPU can run this job: {node} needs {item.what}, which none of the {gpus} GPU(s) has"
    return f"no single GPU has everything this job needs: {node} needs {item.what}, missing on the closest of " \
           f"{gpus} GPU(s)"
