"""The job request: its schema and validation, shared by the web tier, the Python client and the task."""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Any

TEMPLATES = ("txt2img", "img2img")
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_sde", "dpmpp_2m",
            "dpmpp_2m_sde", "ddim", "uni_pc")
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")
MAX_SEED = 2 ** 63 - 1
_CHECKPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ]{0,200}$")
_INPUT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_job_id(value: Any) -> bool:
    """Job ids are UUIDs (as Celery makes task ids), checked before an id touches a path, a key or a URL."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


class RequestError(ValueError):
    """A rejected request; `errors` lists every problem as {"field", "message"}."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "euler"
    scheduler: str = "normal"
    seed: int | None = None
    checkpoint: str = ""
    batch_size: int = 1
    template: str = "txt2img"
    input_image: str | None = None  # img2img: the id of an uploaded input image (app/inputs.py)
    strength: float = 0.75

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(JobRequest)}


@dataclass(frozen=True)
class RequestLimits:
    """The operator's limits on a request (MAX_PROMPT_LENGTH, MAX_STEPS, MAX_BATCH, MAX_PIXELS) and the checkpoint
    a request that names none gets (CHECKPOINT)."""
    max_prompt_length: int = 2000
    max_steps: int = 150
    max_batch: int = 8
    max_pixels: int = 2048 * 2048
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"


def _shown(value: Any) -> str:
    try:
        text = str(value)
    except ValueError:  # an int too long to print
        return "a number too large to show"
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.errors: list[dict[str, str]] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append({"field": name, "message": message})

    def text(self, name: str, default: str, limit: int, required: bool = False) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            self.fail(name, "must be a string")
            return default
        if required and not value.strip():
            self.fail(name, "is required and must not be blank")
        if len(value) > limit:
            self.fail(name, f"must be at most {limit} characters (got {len(value)})")
        if "\x00" in value:
            self.fail(name, "must not contain NUL characters")
        return value

    def integer(self, name: str, default: int | None, low: int, high: int, multiple: int = 1) -> int | None:
        value = self.data.get(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "must be an integer")
            return default
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high} (got {_shown(value)})")
        elif value % multiple:
            self.fail(name, f"must be a multiple of {multiple} (got {value})")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            self.fail(name, "must be a number")
            return default
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high} (got {_shown(value)})")
            return default
        return float(value)

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.data.get(name, default)
        if value not in options:
            self.fail(name, f"must be one of {', '.join(options)}")
            return default
        return value


def parse_request(data: Any, limits: RequestLimits = RequestLimits()) -> JobRequest:
    """Validate a request (a JSON object); raises RequestError naming every bad field. Fills in the seed."""
    if not isinstance(data, dict):
        raise RequestError([{"field": "(body)", "message": "must be a JSON object"}])
    check = _Checker(data)
    for name in sorted(set(data) - FIELDS):
        check.fail(str(name)[:100], "unknown field")
    template = check.choice("template", "txt2img", TEMPLATES)
    request = JobRequest(
        prompt=check.text("prompt", "", limits.max_prompt_length, required=True),
        negative_prompt=check.text("negative_prompt", "", limits.max_prompt_length),
        width=check.integer("width", 512, 64, 4096, multiple=8),
        height=check.integer("height", 512, 64, 4096, multiple=8),
        steps=check.integer("steps", 20, 1, limits.max_steps),
        cfg=check.number("cfg", 7.0, 0.0, 30.0),
        sampler=check.choice("sampler", "euler", SAMPLERS),
        scheduler=check.choice("scheduler", "normal", SCHEDULERS),
        seed=check.integer("seed", None, 0, MAX_SEED),
        checkpoint=check.text("checkpoint", limits.checkpoint, 200),
        batch_size=check.integer("batch_size", 1, 1, limits.max_batch),
        template=template,
        input_image=data.get("input_image"),
        strength=check.number("strength", 0.75, 0.0, 1.0),
    )
    if request.checkpoint and not _CHECKPOINT.fullmatch(request.checkpoint):
        check.fail("checkpoint", "must be a plain file name (letters, digits, . _ - and spaces)")
    if request.width * request.height > limits.max_pixels:
        check.fail("width", f"width x height must be at most {limits.max_pixels} pixels")
    _check_input_image(check, request)
    if check.errors:
        raise RequestError(check.errors)
    if request.seed is None:
        request = dataclasses.replace(request, seed=random.randint(0, 2 ** 32 - 1))
    return request


def _check_input_image(check: _Checker, request: JobRequest) -> None:
    if request.template == "img2img":
        if not isinstance(request.input_image, str) or not _INPUT_ID.fullmatch(request.input_image):
            check.fail("input_image", "img2img needs an input image")
    elif request.input_image is not None:
        check.fail("input_image", "only the img2img template takes an input image")
