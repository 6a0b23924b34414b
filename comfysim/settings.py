"""Simulator settings: timing and fault injection, from command-line flags or COMFYSIM_* variables."""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

DEFAULT_CHECKPOINTS = ("v1-5-pruned-emaonly.safetensors", "random_sd15.safetensors")


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8188
    data_dir: str = "var/comfysim"
    # Seconds a sampler (KSampler, KSamplerAdvanced) spends on each step.
    step_seconds: float = 0.05
    # Seconds the first CheckpointLoaderSimple of a checkpoint takes (a cold model load).
    load_seconds: float = 0.0
    previews: bool = True
    checkpoints: tuple[str, ...] = DEFAULT_CHECKPOINTS
    custom_nodes: tuple[str, ...] = ()  # optional node classes installed (comfysim/catalogue.py OPTIONAL_NODES)
    # Fault injection.
    fail_node: str = ""  # a node class that raises when it executes
    fail_exception: str = "RuntimeError: simulated failure"  # "Type: message"
    drop_ws_after: int = 0  # close every websocket abruptly after N frames (0 = never)
    history_delay: float = 0.0  # seconds between execution_success and the history write
    success_delay: float = 0.0  # seconds between the last node's end (its `executed`) and execution_success
    view_delay: float = 0.0  # seconds every GET /view waits before answering
    fail_view: int = 0  # answer the next N GET /view with HTTP 500
    exit_at_step: int = 0  # the process exits (no goodbye) when a sampler reaches this step (0 = never)
    ignore_interrupt: bool = False  # POST /interrupt does nothing, as with a node stuck in a call that never checks
    interrupt_as_error: bool = False  # an interrupt ends the prompt with execution_error (a node that wraps it)
    refuse_prompt: int = 0  # answer the next N POST /prompt with 500 (-1 = all of them)
    garbage: str = ""  # answer this route with nonsense: "prompt", "history", "queue" or "view"
    request_log: str = ""  # append every HTTP request and websocket connection as JSON lines here
    log_events: bool = False  # also log when prompts start and end and each progress frame (benchmarks)
    noise: float = 0.0  # 0..1: mix deterministic noise into generated images (1.0 gives ~1 MB PNGs at 600x600)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply runtime changes (from POST /sim/settings); unknown names raise KeyError."""
        names = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in names or name in ("host", "port", "data_dir"):
                raise KeyError(name)
            setattr(self, name, _coerce(names[name], value))

    def public(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checkpoints"] = list(self.checkpoints)
        data["custom_nodes"] = list(self.custom_nodes)
        return data


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = type(f.default)
    if kind is bool:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if kind is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if kind in (int, float, str):
        return kind(value)
    return value


def parse_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags win over COMFYSIM_<NAME> environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    settings = Settings()
    fields = dataclasses.fields(Settings)
    for f in fields:
        env_value = environ.get(f"COMFYSIM_{f.name.upper()}")
        if env_value is not None:
            setattr(settings, f.name, _coerce(f, env_value))
    parser = argparse.ArgumentParser(prog="python -m comfysim", description="A ComfyUI-compatible simulator.")
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, dest=f.name, default=None)
    for name, value in vars(parser.parse_args(argv)).items():
        if value is not None:
            field_ = next(f for f in fields if f.name == name)
            setattr(settings, name, _coerce(field_, value))
    return settings
