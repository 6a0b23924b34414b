"""Browser tests: Debian's chromium driven by Playwright against the real web app, worker and simulator.

The web app runs in this process in a thread (werkzeug's make_server on a free 127.0.0.1 port); workers and
simulators come from tests/conftest.py; `templates_web` is the web app reading its workflow templates from a
directory of the test's own (`templates_dir`). Chromium is /usr/bin/chromium (`make test` installs
it); Playwright never downloads a browser here."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask

from playwright import sync_api as playwright_sync

from app.templates import SHIPPED_DIR
from testkit.paths import SCREENSHOTS
from testkit.services import LiveServer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs it (scripts/apt-install.sh)"
    with playwright_sync.sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page in a fresh headless chromium (its own user-data dir). Uncaught page errors fail the test."""
    profile = tmp_path / "chromium-profile"
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.pages[0] if context.pages else context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    shutil.rmtree(profile, ignore_errors=True)
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def screenshot(page: Any, request: pytest.FixtureRequest) -> Any:
    """screenshot(): saves the page as test-output/screenshots/<test>.png."""
    def take(suffix: str = "") -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name}{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return take


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    """A copy of the shipped workflow templates (TEMPLATES_DIR of `templates_web`), for a test to add to."""
    directory = tmp_path / "templates"
    directory.mkdir()
    for path in SHIPPED_DIR.glob("*.json"):
        shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture
def templates_web(make_app: Callable[..., Flask], templates_dir: Path) -> Iterator[LiveServer]:
    """The web tier as `live_web` serves it, with TEMPLATES_DIR=`templates_dir`."""
    server = LiveServer(make_app(templates_dir=str(templates_dir))).start()
    yield server
    server.stop()
