"""Reading a job submission from an HTTP request (JSON, or a multipart form with an optional image)."""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

from flask import current_app, g, request

from app.batch import submit_many
from app.images import InvalidImage
from app.inputs import MAX_INPUT_BYTES
from app.jobs import IdempotencyConflict, submit
from app.request import JobRequest, WorkflowsNotAllowed
from app.validation import RequestError
from app.routing import NoCapableGPU
from web.context import celery_app
from web.errors import ApiError

CONVERT = {"integer": int, "seed": int, "number": float}  # a form's strings, by the parameter's declared type
ENVELOPE_TYPES = {"priority": "integer"}
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")


def _form_fields(with_image: bool) -> dict[str, Any]:
    """Form values are strings: empty ones are left out, numbers converted by the chosen template's declared
    parameter types (a bad one is reported by name)."""
    templates = celery_app().templates
    template = templates.get(request.form.get("template") or
                             (templates.default_for_image if with_image else templates.default))
    params = template.params if template else {}
    fields: dict[str, Any] = {}
    errors = []
    for name, value in request.form.items():
        if value == "":
            continue
        param = params.get(name)
        kind = param.type if param is not None else ENVELOPE_TYPES.get(name)
        if param is not None and kind == "choice":  # an option as the form shows it: "2" for 2
            value = next((option for option in param.options if str(option) == value), value)
        elif kind in CONVERT:
            try:
                value = CONVERT[kind](value)
            except ValueError:
                errors.append({"field": name, "message": "must be a number"})
                continue
        fields[name] = value
    if errors:
        raise ApiError(422, "invalid_request", "the request is not valid", errors)
    return fields


def _uploaded_image() -> bytes | None:
    upload = request.files.get("image")
    if upload is None or not upload.filename:
        return None
    data = upload.read(MAX_INPUT_BYTES + 1)
    if not data:
        return None
    if len(data) > MAX_INPUT_BYTES:
        raise ApiError(413, "too_large", f"the image must be at most {MAX_INPUT_BYTES} bytes",
                       [{"field": "image", "message": "too large"}])
    return data


def _refuse_oversize_stream() -> None:
    """A body sent without Content-Length (chunked) is cut at the limit by the reader, not refused: refuse it."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and request.mimetype != "multipart/form-data" and limit:
        if len(request.get_data(cache=True)) >= limit:
            raise ApiError(413, "request_entity_too_large", f"the body must be smaller than {limit} bytes")


def read_submission() -> tuple[dict[str, Any], bytes | None]:
    content_type = request.mimetype
    _refuse_oversize_stream()
    if content_type == "application/json":
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            data = None
        if data is None:
            raise ApiError(400, "malformed_json", "the body is not valid JSON (UTF-8)")
        return data, None
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        image = _uploaded_image()
        return _form_fields(image is not None), image
    raise ApiError(415, "unsupported_media_type",
                   "send application/json, or multipart/form-data (with an optional `image` file)")


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(400, "invalid_request", "Idempotency-Key must be 1 to 255 visible ASCII characters",
                       [{"field": "Idempotency-Key", "message": "1 to 255 visible ASCII characters"}])
    return key


def queue_job() -> tuple[str, JobRequest]:
    """Validate and queue the request's job (for the caller `g.client`); every problem is a 4xx naming the field,
    and nothing is queued."""
    key = idempotency_key()
    fields, image = read_submission()
    if not isinstance(fields, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object",
                       [{"field": "(body)", "message": "must be a JSON object"}])
    with _refusals("this job"):
        return submit(celery_app(), fields, input_image=image, client=g.client, idempotency_key=key,
                      raw_allowed="workflows" in g.scopes)


def queue_jobs() -> list[tuple[str, JobRequest]]:
    """Validate every job of a batch, `{"requests": [...]}` (JSON only: no image is uploaded in a batch), and queue
    them all (app/batch.py); any problem is a 4xx naming `requests[<index>].<field>`, and nothing is queued."""
    key = idempotency_key()
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", 'send application/json: {"requests": [job request, ...]}')
    body, _ = read_submission()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", 'the body must be a JSON object: {"requests": [job request, ...]}',
                       [{"field": "(body)", "message": "must be a JSON object"}])
    unknown = sorted(set(body) - {"requests"})
    if unknown:
        raise ApiError(422, "invalid_request", "the request is not valid",
                       [{"field": name[:100], "message": "unknown field (a batch takes `requests`)"}
                        for name in unknown])
    with _refusals("a job of the batch (nothing was queued)",
                   "a request of the batch is not valid (nothing was queued)"):
        return submit_many(celery_app(), body.get("requests"), client=g.client, idempotency_key=key,
                           raw_allowed="workflows" in g.scopes)


@contextmanager
def _refusals(job: str, invalid: str = "the request is not valid") -> Iterator[None]:
    """A refused submission as its 4xx answer."""
    try:
        yield
    except IdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc))
    except NoCapableGPU as exc:
        raise ApiError(422, "no_capable_gpu", f"no GPU can run {job}", exc.errors)
    except WorkflowsNotAllowed as exc:
        raise ApiError(403, "forbidden", "raw workflows are not allowed for this caller", exc.errors)
    except RequestError as exc:
        raise ApiError(422, "invalid_request", invalid, exc.errors)
    except InvalidImage as exc:
        raise ApiError(400, "invalid_image", str(exc), [{"field": "image", "message": str(exc)}])
