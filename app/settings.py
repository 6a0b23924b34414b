"""Settings: every configuration variable of text2img-queue, read from the environment here and nowhere else.

`Settings.from_env()` builds the one object that is then passed explicitly: to the Celery app
(`app.celery_app.create_celery`), the web tier (`web.create_app(settings)`), the GPU worker launcher and the
Python client. The README's configuration table lists the same variables."""
from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from app.templates import SHIPPED_DIR, Templates
from app.validation import RequestLimits


def _items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


class ApiClient(NamedTuple):
    """The caller a token names, and what the token allows beyond the basics (`workflows`: raw workflows)."""
    name: str
    scopes: frozenset[str] = frozenset()


SCOPES = ("workflows",)


def named_tokens(value: str) -> dict[str, ApiClient]:
    """API_TOKENS: `name:token` or `name:token:scope+scope` items (a bare token is named tokenN) -> {token: client}."""
    tokens: dict[str, ApiClient] = {}
    for number, item in enumerate(_items(value), start=1):
        parts = [part.strip() for part in item.split(":")]
        if len(parts) > 3:
            raise ValueError(f"API_TOKENS: {parts[0]!r}...: use name:token or name:token:scopes")
        name, token, scopes = ["", *parts, ""] if len(parts) == 1 else [*parts, ""][:3]
        granted = frozenset(filter(None, scopes.split("+")))
        if granted - set(SCOPES):
            raise ValueError(f"API_TOKENS: unknown scope(s) {', '.join(sorted(granted - set(SCOPES)))} (known: "
                             f"{', '.join(SCOPES)})")
        tokens[token] = ApiClient(name or f"token{number}", granted)
    return tokens


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis behind Sentinel (REDIS_URL sentinel://host:port;sentinel://host2:port/db): the master's name, and the
    # password of the sentinels themselves (the master's own is the URL's). TLS (rediss://): the CA that signed
    # Redis's certificate (unset: the system's CAs), and this client's certificate and key (`tls-auth-clients`).
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str = ""
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    queue_name: str = "text2img"
    # A GPU worker: its ComfyUI (else entry gpu_index of comfyui_urls, else 127.0.0.1:8188+gpu_index).
    comfyui_url: str | None = None
    comfyui_urls: tuple[str, ...] = ()
    comfyui_dir: str | None = None  # a GPU worker's ComfyUI folder (input/, output/): each job's files deleted
    gpu_index: int = 0
    worker_host: str = field(default_factory=socket.gethostname)
    log_level: str = "info"
    # Seconds: on the GPU from execution_start; waiting in ComfyUI's queue; for ComfyUI to stop a prompt.
    job_time_limit: float = 600.0
    queue_wait_limit: float = 600.0
    interrupt_grace: float = 30.0
    lease_ttl: float = 10.0
    reaper_interval: float = 2.0
    visibility_timeout: int | None = None  # None: job_time_limit + queue_wait_limit + 300
    result_expires: int = 86400
    output_store: str = "redis"  # "redis" or "directory"
    output_dir: str = "var/outputs"
    preview_ttl: int = 60
    pipeline_lookahead: float = 2.0  # 0: off
    progress_interval: float = 0.1
    comfyui_retries: int = 3
    worker_heartbeat: float = 5.0
    capabilities_interval: float = 300.0  # seconds between a worker's reads of its ComfyUI's /object_info
    max_prompt_length: int = 2000
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch: int = 8
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    templates_dir: str = str(SHIPPED_DIR)
    default_template: str = "txt2img"
    default_image_template: str = "img2img"
    raw_workflows: bool = False  # everyone may send a raw workflow (else only tokens with the workflows scope)
    max_workflow_nodes: int = 500
    # Webhooks (app/webhooks.py): the signing secret (unset: requests with a webhook_url are refused).
    webhook_secret: str = ""
    webhook_allow_private: bool = False
    webhook_retry_hours: float = 24.0
    # The web tier.
    api_tokens: Mapping[str, ApiClient] = field(default_factory=dict)  # token -> client
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 25 * 1024 * 1024
    status_cache: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_workers: int = 4
    web_threads: int = 1
    # Live events (GET /api/jobs/<id>/events): threads per web process kept for event streams, beyond
    # WEB_THREADS (so streams never take a thread from status polls), and the longest a stream stays open.
    event_streams: int = 16
    event_stream_seconds: float = 300.0
    # Prometheus: a GPU worker's /metrics address (no port: none served); the web tier's multi-process folder.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    metrics_dir: str = "var/metrics"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """From the environment (os.environ by default); `overrides` win (a launcher's command-line options)."""
        env = os.environ if environ is None else environ
        read: dict[str, Any] = {}
        for setting in dataclasses.fields(cls):
            name = setting.name.upper()
            if name in env:
                read[setting.name] = _parse(setting.name, env[name])
        return cls(**{**read, **overrides})

    def to_env(self) -> dict[str, str]:
        """The environment that gives these settings to another process (`from_env` reads it back)."""
        env = {}
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            if value is not None:
                env[setting.name.upper()] = _format(setting.name, value)
        return env

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def broker_visibility_timeout(self) -> int:
        """The broker's last resort must outlast the longest job: its limits and a margin."""
        if self.visibility_timeout is not None:
            return self.visibility_timeout
        return int(self.job_time_limit + self.queue_wait_limit) + 300

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(self.max_prompt_length, self.max_steps, self.max_batch, self.max_pixels,
                             self.checkpoint, self.max_workflow_nodes, self.raw_workflows)

    def templates(self) -> Templates:
        """The workflow templates of TEMPLATES_DIR (a new object each call: each app keeps one)."""
        return Templates(self.templates_dir, self.default_template, self.default_image_template)

    @property
    def worker_name(self) -> str:
        """The GPU worker's Celery name: gpu<GPU_INDEX>@<WORKER_HOST>."""
        return f"gpu{self.gpu_index}@{self.worker_host}"

    def worker_comfyui_url(self) -> str:
        """The ComfyUI of this settings' GPU worker."""
        if self.comfyui_url:
            return self.comfyui_url
        if self.comfyui_urls:
            if self.gpu_index >= len(self.comfyui_urls):
                raise ValueError(f"COMFYUI_URLS lists {len(self.comfyui_urls)} URL(s); there is none for GPU "
                                 f"{self.gpu_index}")
            return self.comfyui_urls[self.gpu_index]
        return f"http://127.0.0.1:{8188 + self.gpu_index}"


def _format(name: str, value: Any) -> str:
    if name == "api_tokens":
        return ",".join(f"{client.name}:{token}:{'+'.join(sorted(client.scopes))}" for token, client in value.items())
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse(name: str, value: str) -> Any:
    if name == "api_tokens":
        return named_tokens(value)
    if name in ("comfyui_urls", "cors_origins"):
        return _items(value)
    kind = {setting.name: setting.type for setting in dataclasses.fields(Settings)}[name]
    if kind == "bool":
        return value.strip() == "1"
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    return value
