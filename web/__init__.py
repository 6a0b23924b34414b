"""The web tier: the Flask app factory, with the JSON API, the simple API (/generate, /status, /result) and the
web form."""
from __future__ import annotations

from typing import Any

from flask import Flask, request

from app.celery_app import create_celery
from app.settings import Settings
from web.context import EXTENSION
from web.errors import register_error_handlers


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """settings: from the environment when None (as gunicorn's `web:create_app()` runs it)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TOKENS=dict(settings.api_tokens),
        CORS_ORIGINS=list(settings.cors_origins),
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False
    app.extensions[EXTENSION] = create_celery(settings)

    from web import api, events, legacy, metrics, pages
    app.register_blueprint(metrics.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(events.bp)
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
