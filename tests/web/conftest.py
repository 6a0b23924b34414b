"""Flask fixtures in the style of Flask's tutorial: every test gets its own app and client, on a clean Redis."""
from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from web import create_app


@pytest.fixture
def app(settings, clean_redis) -> Flask:
    return create_app(settings, {"TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
