"""Which GPUs can run a job: a job is refused at submit when GPUs have said what they offer
(app/capabilities.py) and none of them offers everything its graph needs."""
from __future__ import annotations

from typing import Any, Mapping

from app.capabilities import Capabilities
from app.fleet import Fleet
from app.request import RequestError

# The request field that chose what is missing, for the answer; "template" for what the template itself needs.
FIELD_OF = {"checkpoints": "checkpoint"}


class NoCapableGPU(RequestError):
    """No known GPU can run the job (HTTP 422): `errors` names each thing none of them has."""


def check_runnable(fleet: Fleet, graph: Mapping[str, Any]) -> None:
    """Raises NoCapableGPU unless a known GPU (online, or gone within a few refreshes) can run `graph`. With no
    GPU known yet, the job is accepted and waits for one."""
    known = fleet.known_capabilities()
    if not known:
        return
    needs = Capabilities.needed_by(graph)
    lacks = [capabilities.lacks(needs) for capabilities in known.values()]
    if any(not lack for lack in lacks):
        return
    closest = min(lacks, key=lambda lack: sum(len(names) for names in lack.values()))
    raise NoCapableGPU([{"field": FIELD_OF.get(kind, "template"), "message": _missing(kind, name, len(known))}
                        for kind, names in closest.items() for name in names])


def _missing(kind: str, name: str, gpus: int) -> str:
    what = f"the node class {name}" if kind == "node_classes" else f"the {kind} file {name!r}"
    return f"no GPU can run this job: {what} is missing (on the closest of {gpus} GPU(s))"
