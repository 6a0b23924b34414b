"""The job request: a template and its parameters' values, or a raw workflow. Read and checked here for the web
tier, the Python client and the task alike."""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

from app.templates import Template, Templates
from app.validation import FieldChecker, RequestError, RequestLimits
from app.workflow import save_under_job, shape_errors

# Request fields that are not a template's parameters.
ENVELOPE = ("template", "priority", "client", "webhook_url", "webhook_progress")
DEFAULT_PRIORITY = 5
MAX_MILESTONES = 10
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]{0,1990}$", re.IGNORECASE)
_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
UPLOAD_PENDING = "upload-pending"  # an image parameter's value while its upload is checked


class WorkflowsNotAllowed(RequestError):
    """A raw workflow from a caller without the `workflows` scope (HTTP 403)."""


@dataclass(frozen=True)
class JobRequest:
    template: Template | None  # None: a raw workflow
    params: Mapping[str, Any]
    workflow: Mapping[str, Any] | None = None
    priority: int = DEFAULT_PRIORITY  # 0-9: a higher one starts before every lower one queued
    client: str | None = None  # whose fair share it counts against (a token's client name wins)
    webhook_url: str | None = None  # where its status is POSTed when it ends (app/webhooks.py)
    webhook_progress: tuple[int, ...] = ()  # percents (ascending) at which its status is POSTed while it runs

    @property
    def name(self) -> str:
        """The template's name, or "workflow"."""
        return self.template.name if self.template is not None else "workflow"

    @property
    def seed(self) -> int | None:
        return self.params.get("seed") if self.template is not None and "seed" in self.template.params else None

    @property
    def input_image(self) -> str | None:
        """The id of the job's uploaded input image, for a template that takes one."""
        name = self.template.image_param if self.template is not None else None
        return None if name is None else self.params.get(name)

    def with_values(self, **values: Any) -> "JobRequest":
        return dataclasses.replace(self, params={**self.params, **values})

    def with_input_image(self, input_id: str) -> "JobRequest":
        assert self.template is not None and self.template.image_param is not None
        return self.with_values(**{self.template.image_param: input_id})

    def to_dict(self) -> dict[str, Any]:
        """The request as it is queued and recorded (and read back by parse_request)."""
        envelope: dict[str, Any] = {"priority": self.priority} if self.priority != DEFAULT_PRIORITY else {}
        if self.client is not None:
            envelope["client"] = self.client
        if self.webhook_url is not None:
            envelope["webhook_url"] = self.webhook_url
        if self.webhook_progress:
            envelope["webhook_progress"] = list(self.webhook_progress)
        if self.template is None:
            return {"workflow": self.workflow, **envelope}
        return {"template": self.template.name, **envelope, **self.params}

    def graph(self, job_id: str, image_name: str | None = None) -> dict[str, Any]:
        """The ComfyUI graph this job runs. image_name: the name ComfyUI gave the uploaded input image."""
        if self.template is None:
            return save_under_job(copy.deepcopy(dict(self.workflow or {})), job_id)
        return self.template.fill(self.params, job_id, image_name)

    def field_for(self, node_id: str, input_name: str | None) -> str:
        """The request field that chose a node's input: the template parameter that fills it (else "template"), or
        the raw workflow's node and input."""
        if self.template is None:
            return f"workflow.{node_id}." + (f"inputs.{input_name}" if input_name else "class_type")
        return self.template.param_filling(node_id, input_name) or "template"

    def summary(self) -> str:
        shown = ", ".join(f"{name}={str(value)[:24]}" for name, value in self.params.items() if name != "prompt")
        return f"{self.name}({shown})" if self.template is not None else f"workflow of {len(self.workflow or {})} nodes"


def parse_request(data: Any, limits: RequestLimits, templates: Templates, raw_allowed: bool = False,
                  with_image: bool = False) -> JobRequest:
    """Check a request (a JSON object); raises RequestError naming every bad field. Fills in defaults and the
    seed. raw_allowed: the caller may send a raw `workflow` (besides RAW_WORKFLOWS, which allows everyone).
    with_image: an image is uploaded with it (a request that names no template gets DEFAULT_IMAGE_TEMPLATE)."""
    if not isinstance(data, dict):
        raise RequestError([{"field": "(body)", "message": "must be a JSON object"}])
    check = FieldChecker(data)
    envelope = _envelope(check)
    if "workflow" in data:
        return dataclasses.replace(_raw_workflow(data, limits, raw_allowed, check), **envelope)
    default = templates.default_for_image if with_image else templates.default
    known = len(check.errors)
    template = templates.get(check.choice("template", default, tuple(templates.names())))
    if len(check.errors) > known:  # the template decides which fields there are: nothing more to check without it
        raise RequestError(check.errors[known:])
    if template is None:
        raise RequestError([{"field": "template", "message": f"no template {default!r} is installed"}])
    if with_image:
        if template.image_param is None:
            check.fail("image", f"template {template.name} takes no input image")
        else:
            check.data = {**data, template.image_param: UPLOAD_PENDING}
    takes = f" (template {template.name} takes {', '.join(template.params)})" if template.params else ""
    for name in sorted(set(map(str, data)) - set(template.params) - set(ENVELOPE)):
        check.fail(name[:100], f"unknown field{takes}")
    values = template.check(check, limits)
    check.raise_errors()
    return JobRequest(template, values, **envelope)


def _envelope(check: FieldChecker) -> dict[str, Any]:
    priority = check.integer("priority", DEFAULT_PRIORITY, 0, 9)
    client = check.data.get("client")
    if client is not None and not (isinstance(client, str) and _CLIENT.fullmatch(client)):
        check.fail("client", "must be a name of 1 to 64 letters, digits and . _ - @")
        client = None
    webhook_url = check.data.get("webhook_url")
    if webhook_url is not None and not (isinstance(webhook_url, str) and _URL.fullmatch(webhook_url)):
        check.fail("webhook_url", "must be an http or https URL (at most 2000 characters)")
        webhook_url = None
    return {"priority": int(priority if priority is not None else DEFAULT_PRIORITY), "client": client,
            "webhook_url": webhook_url, "webhook_progress": _milestones(check, webhook_url)}


def _milestones(check: FieldChecker, webhook_url: str | None) -> tuple[int, ...]:
    marks = check.data.get("webhook_progress")
    if marks is None:
        return ()
    if not (isinstance(marks, list) and 0 < len(marks) <= MAX_MILESTONES
            and all(type(mark) is int and 1 <= mark <= 99 for mark in marks)):
        check.fail("webhook_progress", f"must be a list of 1 to {MAX_MILESTONES} whole percents from 1 to 99")
        return ()
    if check.data.get("webhook_url") is None:
        check.fail("webhook_progress", "needs a webhook_url")
    return tuple(sorted(set(marks)))


def _raw_workflow(data: dict[str, Any], limits: RequestLimits, raw_allowed: bool,
                  check: FieldChecker) -> JobRequest:
    if not (raw_allowed or limits.raw_workflows):
        raise WorkflowsNotAllowed([{"field": "workflow", "message": "raw workflows need a token with the "
                                                                    "`workflows` scope (or RAW_WORKFLOWS=1)"}])
    allowed = {"workflow", *ENVELOPE} - {"template"}
    for name in sorted(set(map(str, data)) - allowed):
        check.fail(name[:100], "unknown field (a raw workflow request takes `workflow`, `priority`, `client`, "
                               "`webhook_url` and `webhook_progress`)")
    check.errors += shape_errors(data["workflow"], limits.max_workflow_nodes)
    check.raise_errors()
    return JobRequest(None, {}, data["workflow"])
