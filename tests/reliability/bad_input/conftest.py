"""The bench: a test client of a fresh web app on a clean Redis."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from flask import Flask

from app.celery_app import Text2ImgCelery
from app.settings import Settings
from app.templates import SHIPPED_DIR
from tests.reliability.bad_input.property import LIMITS, Bench


@pytest.fixture
def bench(settings: Settings, core: Text2ImgCelery, make_app: Callable[..., Flask]) -> Bench:
    assert settings.request_limits == LIMITS, "the examples are drawn near other limits than the web app's"
    assert Path(settings.templates_dir).resolve() == SHIPPED_DIR and \
        (settings.default_template, settings.default_image_template) == ("txt2img", "img2img"), \
        "the examples are drawn from the shipped templates' declarations"
    assert not settings.request_limits.raw_workflows, "raw workflows must need the workflows scope"
    return Bench(make_app().test_client(), core)
