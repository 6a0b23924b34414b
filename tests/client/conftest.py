"""The Python client for programs that share the Redis, on the test settings."""
from __future__ import annotations

import pytest

from app.client import Client
from app.settings import Settings


@pytest.fixture
def python_client(settings: Settings) -> Client:
    return Client(settings)
