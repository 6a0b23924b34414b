"""The OpenAPI 3.1 document served at /api/openapi.json (a test checks it against the app's routes)."""
from __future__ import annotations

from typing import Any

from app.request import SAMPLERS, SCHEDULERS, TEMPLATES, RequestLimits


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json("Error")}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
NOT_FOUND = _error("unknown or expired job id")


def _request_schema(limits: RequestLimits) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": limits.max_prompt_length},
            "negative_prompt": {"type": "string", "maxLength": limits.max_prompt_length},
            "width": {"type": "integer", "minimum": 64, "maximum": 4096, "multipleOf": 8, "default": 512},
            "height": {"type": "integer", "minimum": 64, "maximum": 4096, "multipleOf": 8, "default": 512},
            "steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps, "default": 20},
            "cfg": {"type": "number", "minimum": 0, "maximum": 30, "default": 7.0},
            "sampler": {"enum": list(SAMPLERS), "default": "euler"},
            "scheduler": {"enum": list(SCHEDULERS), "default": "normal"},
            "seed": {"type": "integer", "minimum": 0, "description": "random when absent; reported back"},
            "checkpoint": {"type": "string", "default": limits.checkpoint},
            "batch_size": {"type": "integer", "minimum": 1, "maximum": limits.max_batch, "default": 1},
            "template": {"enum": list(TEMPLATES), "default": "txt2img"},
            "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.75,
                         "description": "img2img: how much of the input image is replaced"},
        },
    }


def openapi_document(limits: RequestLimits) -> dict[str, Any]:
    create = {
        "summary": "Queue a job", "security": [{"bearer": []}, {}],
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                        "description": "a retry with the same key and body returns the same job (per API client, "
                                       "for RESULT_EXPIRES); the same key with another body answers 409"}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
            "multipart/form-data": {"schema": {"type": "object", "description": "JobRequest fields as form "
                                               "fields, and an optional `image` file (img2img)"}}}},
        "responses": {"202": {"description": "queued", **_json("Queued")}, "400": _error("invalid request"),
                      "401": _error("missing or wrong token"), "409": _error("Idempotency-Key reused with another body"),
                      "413": _error("body too large"), "415": _error("unsupported content type"),
                      "422": _error("no GPU can run the job (a model file or node class is missing); fields name it")},
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
            "/api/jobs/{job_id}/preview": {
                "parameters": [JOB_ID],
                "get": {"summary": "Latest preview frame of a running job", "responses": {
                    "200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                    "204": {"description": "no preview yet"}, "404": NOT_FOUND}}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
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
                "JobRequest": _request_schema(limits),
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
