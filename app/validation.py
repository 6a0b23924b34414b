"""The vocabulary of request validation: the error every layer raises, the operator's limits, and the checker
that reads one field and names it in every problem it finds."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_SEED = 2 ** 63 - 1
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_job_id(value: Any) -> bool:
    """Job ids are UUIDs (as Celery makes task ids), checked before an id touches a path, a key or a URL."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def invalid_job_id(job_id: Any) -> str:
    """Why a task with this id is not a job."""
    return f"invalid job id {str(job_id)[:64]!r}: a job id must be a UUID (send_task makes one when no task_id is " \
           f"given)"


class RequestError(ValueError):
    """A rejected request; `errors` lists every problem as {"field", "message"}."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True)
class RequestLimits:
    """The operator's limits on a request (MAX_PROMPT_LENGTH, MAX_STEPS, MAX_BATCH, MAX_PIXELS, MAX_WORKFLOW_NODES),
    the checkpoint a request that names none gets (CHECKPOINT), and whether anyone may send a raw workflow
    (RAW_WORKFLOWS)."""
    max_prompt_length: int = 2000
    max_steps: int = 150
    max_batch: int = 8
    max_pixels: int = 2048 * 2048
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    max_workflow_nodes: int = 500
    raw_workflows: bool = False

    def operator_limit(self, name: str) -> int:
        """A template parameter's `limit`: the operator's cap on its maximum."""
        return {"max_steps": self.max_steps, "max_batch": self.max_batch}[name]


def shown(value: Any) -> str:
    try:
        text = str(value)
    except ValueError:  # an int too long to print
        return "a number too large to show"
    return text if len(text) <= 40 else text[:37] + "..."


class FieldChecker:
    """Reads fields of one request object; each problem is recorded against its field, and a usable value (the
    default) is returned so that every problem of the request is found in one pass."""

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
            self.fail(name, f"must be between {low} and {high} (got {shown(value)})")
        elif value % multiple:
            self.fail(name, f"must be a multiple of {multiple} (got {value})")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            self.fail(name, "must be a number")
            return default
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high} (got {shown(value)})")
            return default
        return float(value)

    def choice(self, name: str, default: Any, options: tuple[Any, ...]) -> Any:
        value = self.data.get(name, default)
        if isinstance(value, bool) or value not in options:
            self.fail(name, f"must be one of {', '.join(map(str, options))}")
            return default
        return value

    def raise_errors(self) -> None:
        if self.errors:
            raise RequestError(self.errors)
