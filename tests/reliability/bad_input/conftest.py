"""The bench: a test client of a fresh web app on a clean Redis."""
from __future__ import annotations

import pytest
import redis

from tests.reliability.bad_input.property import Bench
from web import create_app


@pytest.fixture
def bench(clean_redis: redis.Redis) -> Bench:
    return Bench(create_app({"TESTING": True}).test_client(), clean_redis)
