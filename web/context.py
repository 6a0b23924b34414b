"""What a request handler reaches the rest of the system through: the Celery app its Flask app was made with."""
from __future__ import annotations

from flask import current_app

from app.celery_app import Text2ImgCelery

EXTENSION = "text2img"


def celery_app() -> Text2ImgCelery:
    return current_app.extensions[EXTENSION]
