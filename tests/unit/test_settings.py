"""Settings: every variable read from the environment in one place, with the types and defaults the README
documents."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from app.celery_app import create_celery
from app.settings import ApiClient, Settings, named_tokens

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_environment_is_read_into_typed_fields():
    settings = Settings.from_env({"REDIS_URL": "redis://h:1/2", "JOB_TIME_LIMIT": "12.5", "MAX_STEPS": "9",
                                  "STATUS_CACHE": "0", "COMFYUI_URLS": "http://a, http://b,",
                                  "API_TOKENS": "alice:tok1, tok2, carol:tok3:workflows", "CORS_ORIGINS": "*",
                                  "RAW_WORKFLOWS": "1"})
    assert settings.redis_url == "redis://h:1/2"
    assert settings.job_time_limit == 12.5 and settings.max_steps == 9 and settings.status_cache is False
    assert settings.comfyui_urls == ("http://a", "http://b")
    assert dict(settings.api_tokens) == {"tok1": ApiClient("alice"), "tok2": ApiClient("token2"),
                                         "tok3": ApiClient("carol", frozenset({"workflows"}))}
    assert settings.raw_workflows is True and settings.request_limits.raw_workflows is True
    assert settings.cors_origins == ("*",)


def test_unset_variables_keep_their_defaults_and_overrides_win():
    settings = Settings.from_env({}, gpu_index=3)
    assert settings.redis_url == "redis://127.0.0.1:6379/0" and settings.lease_ttl == 10.0
    assert settings.gpu_index == 3 and settings.worker_comfyui_url() == "http://127.0.0.1:8191"
    assert Settings.from_env({"GPU_INDEX": "1", "COMFYUI_URLS": "http://a,http://b"}).worker_comfyui_url() == \
        "http://b"
    assert Settings.from_env({"COMFYUI_URL": "http://mine"}).worker_comfyui_url() == "http://mine"
    with pytest.raises(ValueError, match="none for GPU 2"):
        Settings.from_env({"GPU_INDEX": "2", "COMFYUI_URLS": "http://a"}).worker_comfyui_url()


def test_settings_travel_to_another_process_through_its_environment():
    settings = Settings(redis_url="redis://h:1/2", comfyui_urls=("http://a", "http://b"), status_cache=False,
                        api_tokens=named_tokens("alice:tok1,bob:tok2:workflows"), lease_ttl=2.5, visibility_timeout=None)
    assert Settings.from_env(settings.to_env()) == settings
    assert "VISIBILITY_TIMEOUT" not in settings.to_env()


def test_a_malformed_number_is_refused_naming_nothing_silently():
    with pytest.raises(ValueError):
        Settings.from_env({"LEASE_TTL": "ten"})
    with pytest.raises(ValueError, match="unknown scope"):
        Settings.from_env({"API_TOKENS": "alice:tok1:everything"})


def test_the_visibility_timeout_outlasts_the_longest_job_unless_set():
    assert Settings.from_env({}).broker_visibility_timeout == 600 + 600 + 300
    assert Settings.from_env({"JOB_TIME_LIMIT": "100", "QUEUE_WAIT_LIMIT": "50"}).broker_visibility_timeout == 450
    assert Settings.from_env({"VISIBILITY_TIMEOUT": "77"}).broker_visibility_timeout == 77


def test_the_celery_app_is_configured_from_its_settings_alone():
    one = create_celery(Settings(redis_url="redis://one:1/0", queue_name="q1", result_expires=5))
    two = create_celery(Settings(redis_url="redis://two:2/0", queue_name="q2", lease_ttl=3))
    assert (one.conf.broker_url, one.conf.result_backend, one.conf.task_default_queue, one.conf.result_expires) == \
        ("redis://one:1/0", "redis://one:1/0", "q1", 5)
    assert (two.conf.broker_url, two.conf.task_default_queue) == ("redis://two:2/0", "q2")
    assert one.redis.connection_pool.connection_kwargs["host"] == "one"
    assert two.redis.connection_pool.connection_kwargs["host"] == "two"
    assert one.records.expires == 5 and two.settings.lease_ttl == 3


def documented_variables() -> set[str]:
    """The variables of the README's configuration table (a row may name several: `A` / `B`)."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = section.split("### ", 1)[0]  # the product's own table; the local run's variables follow
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`([A-Z_]+)`", row.split("|")[1]))
    return names


def test_the_readme_documents_exactly_the_settings():
    fields = {setting.name.upper() for setting in dataclasses.fields(Settings)}
    assert documented_variables() == fields
