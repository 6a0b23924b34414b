"""The bench: a test client of a fresh web app on a clean Redis."""
from __future__ import annotations

from typing import Callable

import pytest
from flask import Flask

from app.celery_app import Text2ImgCelery
from app.settings import Settings
from tests.reliability.bad_input.property import LIMITS, Bench


@pytest.fixture
def bench(settings: Settings, core: Text2ImgCelery, make_app: Callable[..., Flask]) -> Bench:
    assert settings.request_limits == LIMITS, "the examples are drawn near other limits than the web app's"
    return Bench(make_app().test_client(), core)
