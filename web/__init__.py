"""The web tier: Flask app factory with the JSON API, the seeds' endpoints and the web form."""
from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from web.auth import named_tokens
from web.errors import register_error_handlers


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",") if token.strip()]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=int(os.environ.get("MAX_BODY_BYTES", str(25 * 1024 * 1024))),
        API_TOKENS=named_tokens(os.environ.get("API_TOKENS", "")),
        CORS_ORIGINS=_tokens(os.environ.get("CORS_ORIGINS", "")),
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False

    from web import api, legacy, pages
    app.register_blueprint(api.bp)
    app.register_blueprint(legacy.bp)
    app.register_blueprint(pages.bp)
    register_error_handlers(app)

    @app.after_request
    def cors(response: Any) -> Any:
        origin = request.headers.get("Origin")
        allowed = app.config["CORS_ORIGINS"]
        if origin and ("*" in allowed or origin in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Vary"] = "Origin"
        return response

    return app
