"""What a request handler reaches the rest of the system through: the Celery app its Flask app was made with."""
from __future__ import annotations

from flask import Flask, current_app

from app.celery_app import Text2ImgCelery

EXTENSION = "text2img"


def celery_app(app: Flask | None = None) -> Text2ImgCelery:
    """The Celery app of `app`, or of the Flask app handling the current request."""
    return (app or current_app).extensions[EXTENSION]
