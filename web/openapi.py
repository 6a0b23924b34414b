"""The OpenAPI 3.1 document served at /api/openapi.json (a test checks it against the app's routes)."""
from __future__ import annotations

from typing import Any

from app.batch import MAX_REQUESTS
from app.templates import Template, Templates
from app.validation import RequestLimits


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json("Error")}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
NOT_FOUND = _error("unknown or expired job id")


def _template_schema(template: Template, limits: RequestLimits, default: bool) -> dict[str, Any]:
    name = {"const": template.name}
    return {
        "type": "object", "additionalProperties": False, "description": template.description,
        "required": [param.name for param in template.params.values() if param.required and param.type != "image"]
        + ([] if default else ["template"]),
        "properties": {"template": {**name, "default": template.name} if default else name,
                       **{param.name: param.json_schema(limits) for param in template.params.values()
                          if param.type != "image"}},
    }


def _schemas(templates: Templates, limits: RequestLimits) -> dict[str, Any]:
    """One request schema per template (its parameters as GET /api/templates lists them), and the raw workflow."""
    schemas = {f"Template_{t.name}": _template_schema(t, limits, t.name == templates.default) for t in templates.all()}
    schemas["RawWorkflow"] = {
        "type": "object", "additionalProperties": False, "required": ["workflow"],
        "description": "needs a token with the workflows scope (or RAW_WORKFLOWS=1)",
        "properties": {"workflow": {"type": "object", "maxProperties": limits.max_workflow_nodes,
                                    "description": "a ComfyUI API-format graph: {node id: {class_type, inputs}}"}}}
    schemas["JobRequest"] = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in schemas]}
    return schemas


def openapi_document(templates: Templates, limits: RequestLimits) -> dict[str, Any]:
    create = {
        "summary": "Queue a job", "security": [{"bearer": []}, {}],
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                        "description": "a retry with the same key and body returns the same job (per API client, "
                                       "for RESULT_EXPIRES); the same key with another body answers 409"}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
            "multipart/form-data": {"schema": {"type": "object", "description": "a template's parameters as form "
                                               "fields, and an `image` file for a template that takes one"}}}},
        "responses": {"202": {"description": "queued", **_json("Queued")},
                      "400": _error("malformed body (not JSON, not an object) or Idempotency-Key"),
                      "401": _error("missing or wrong token"),
                      "403": _error("a raw workflow from a caller without the workflows scope"),
                      "409": _error("Idempotency-Key reused with another body"),
                      "413": _error("body too large"), "415": _error("unsupported content type"),
                      "422": _error("a field is invalid (unknown, out of range), or no GPU can run the job (a model "
                                    "file or node class is missing); `fields` names each")},
    }
    create_many = {
        "summary": f"Queue up to {MAX_REQUESTS} jobs at once, all or nothing (no image uploads: a request may name "
                   "an image uploaded before)", "security": [{"bearer": []}, {}],
        "parameters": [{**create["parameters"][0], "description": "a retry with the same key and body returns the "
                        "same jobs (per API client, for RESULT_EXPIRES); the same key with another body answers 409"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "required": ["requests"],
            "properties": {"requests": {"type": "array", "minItems": 1, "maxItems": MAX_REQUESTS,
                                        "items": {"$ref": "#/components/schemas/JobRequest"}}}}}}},
        "responses": {"202": {"description": "every job queued, in the order of the requests", "content": {
                          "application/json": {"schema": {"type": "object", "properties": {"jobs": {
                              "type": "array", "items": {"$ref": "#/components/schemas/Queued"}}}}}}},
                      "400": _error("malformed body (not JSON, not an object) or Idempotency-Key"),
                      "401": _error("missing or wrong token"),
                      "403": _error("a raw workflow from a caller without the workflows scope"),
                      "409": _error("Idempotency-Key reused with another body"),
                      "413": _error("body too large"), "415": _error("not application/json"),
                      "422": _error(f"`requests` is not a list of 1 to {MAX_REQUESTS}, or a request is invalid, or "
                                    "no GPU can run it: `fields` names each bad field of every bad request as "
                                    "`requests[<index>].<field>`; nothing is queued")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "text2img-queue", "version": "1.0"},
        "paths": {
            "/api/jobs": {"post": create, "get": {
                "summary": "Recent jobs, newest first (with API_TOKENS: only the caller's)",
                "security": [{"bearer": []}, {}],
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                           "maximum": 100}}],
                "responses": {"200": {"description": "jobs"}, "400": _error("bad limit"),
                              "401": _error("missing or wrong token")}}},
            "/api/jobs/batch": {"post": create_many},
            "/api/jobs/{job_id}": {
                "parameters": [JOB_ID],
                "get": {"summary": "A job's status", "responses": {"200": _json("Status") | {"description": "status"},
                                                                   "404": NOT_FOUND}},
                "delete": {"summary": "Cancel a job", "security": [{"bearer": []}, {}],
                           "responses": {"200": {"description": "status after the cancel request"},
                                         "401": _error("missing or wrong token"), "404": NOT_FOUND}}},
            "/api/jobs/{job_id}/images/{index}": {
                "parameters": [JOB_ID, {"name": "index", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "get": {"summary": "One output image", "responses": {
                    "200": {"description": "the image", "content": {"image/png": {}, "image/jpeg": {}}},
                    "404": NOT_FOUND}}},
            "/api/jobs/{job_id}/events": {
                "parameters": [JOB_ID, {"name": "Last-Event-ID", "in": "header", "required": False,
                                        "schema": {"type": "string"},
                                        "description": "the id of the last event received: a status the client "
                                                       "has is not sent again"}],
                "get": {"summary": "The job's status changes as Server-Sent Events (event `status`, data: the "
                                   "status as GET /api/jobs/{job_id} answers it), ending after the terminal status",
                        "responses": {
                            "200": {"description": "the event stream", "content": {"text/event-stream": {}}},
                            "204": {"description": "nothing more: the Last-Event-ID names the terminal status"},
                            "404": NOT_FOUND,
                            "503": _error("the server serves EVENT_STREAMS streams already (`busy`), or cannot "
                                          "subscribe (`unavailable`): poll GET /api/jobs/{job_id} (see Retry-After)")}}},
            "/api/jobs/{job_id}/preview": {
                "parameters": [JOB_ID],
                "get": {"summary": "Latest preview frame of a running job", "responses": {
                    "200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                    "204": {"description": "no preview yet"}, "404": NOT_FOUND}}},
            "/api/webhooks/failed": {"get": {
                "summary": "Webhook deliveries that failed for WEBHOOK_RETRY_HOURS (with API_TOKENS: the caller's)",
                "security": [{"bearer": []}, {}],
                "responses": {"200": {"description": "{failed: [{delivery_id, job_id, url, state, attempt, error, "
                                                     "failed_at}]}"}, "401": _error("missing or wrong token")}}},
            "/api/webhooks/failed/{delivery_id}/replay": {
                "parameters": [{"name": "delivery_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {"summary": "Send a failed delivery again (same id, a new retry window)",
                         "security": [{"bearer": []}, {}],
                         "responses": {"200": {"description": "replayed"}, "401": _error("missing or wrong token"),
                                       "404": _error("no such failed delivery")}}},
            "/api/templates": {"get": {"summary": "The workflow templates, with their parameters, defaults and limits",
                                       "responses": {"200": _json("Templates") | {"description": "templates"}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics: the web tier's requests and the fleet's",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {}}}}}},
            "/readyz": {"get": {"summary": "Redis reachable and GPU workers online", "responses": {
                "200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/generate": {"post": {**create, "summary": "Queue a job (simple API)",
                                   "responses": {**create["responses"], "200": {"description": "{prompt_id, status}"}}}},
            "/status/{job_id}": {"parameters": [JOB_ID], "get": {
                "summary": "Status in the simple API's shape", "responses": {"200": {"description": "status"}, "404": NOT_FOUND}}},
            "/result/{job_id}": {"parameters": [JOB_ID], "get": {
                "summary": "Result in the simple API's shape", "responses": {"200": {"description": "result"}, "404": NOT_FOUND}}},
            "/": {"get": {"summary": "The web form", "responses": {"200": {"description": "HTML"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "needed only when the server sets API_TOKENS"}},
            "schemas": {
                **_schemas(templates, limits),
                "Templates": {"type": "object", "properties": {"default": {"type": "string"}, "templates": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "description": {"type": "string"},
                        "params": {"type": "array", "items": {"type": "object"}}}}}}},
                "Queued": {"type": "object", "properties": {"id": {"type": "string"}, "status_url": {"type": "string"},
                                                            "state": {"const": "QUEUED"}, "seed": {"type": "integer"}}},
                "Status": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "state": {"enum": ["QUEUED", "STARTED", "PROGRESS", "SUCCESS", "FAILURE", "CANCELLED"]},
                    "phase": {"type": "string"}, "message": {"type": "string"},
                    "queue": {"type": "object"}, "progress": {"type": "object"}, "node": {"type": ["object", "null"]},
                    "eta_seconds": {"type": ["number", "null"]}, "error": {"type": "object"},
                    "images": {"type": "array"}, "seed": {"type": "integer"},
                    "client": {"type": "string", "description": "the API client that created the job"},
                    "lost_at": {"type": "number", "description": "phase recovering: when its worker was lost"}}},
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "fields": {"type": "array"}}}}},
            },
        },
    }
