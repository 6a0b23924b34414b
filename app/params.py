"""A template's parameters: what each one is (type, default, limits), which node inputs it fills, how a request's
value is checked, and how it is described to callers (GET /api/templates, the OpenAPI document, the web form).

Types:
- text: a prompt; at most MAX_PROMPT_LENGTH characters (or `max_length`), `required` ones must not be blank
- integer, number: `minimum`/`maximum` (an integer may add `multiple_of`, and `limit`: max_steps or max_batch,
  the operator's cap on its maximum)
- choice: one of `options`
- seed: an integer from 0 to 2^63-1, random when absent and reported back; a template has at most one, named seed
- checkpoint: a model file name; CHECKPOINT when absent
- image: an uploaded input image (the `image` file of a multipart request; a template has at most one); the
  worker uploads it to its ComfyUI and fills in the name ComfyUI gave it
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from app.validation import MAX_SEED, FieldChecker, RequestLimits

TYPES = ("text", "integer", "number", "choice", "seed", "checkpoint", "image")
_CHECKPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ]{0,200}$")
INPUT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DECLARED = {"name", "type", "fills", "default", "required", "minimum", "maximum", "multiple_of", "options",
             "max_length", "limit", "description"}


class TemplateInvalid(ValueError):
    """A template file or its declarations are wrong (an operator's mistake): the template is not offered."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    fills: tuple[tuple[str, str], ...]  # (node title, input name)
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int = 1
    options: tuple[Any, ...] = ()
    max_length: int | None = None
    limit: str | None = None
    description: str = ""

    @classmethod
    def declared(cls, data: Any) -> "Param":
        """From a template's declaration; raises TemplateInvalid naming what is wrong."""
        if not isinstance(data, dict) or not _NAME.fullmatch(str(data.get("name", ""))):
            raise TemplateInvalid(f"a parameter needs a lower-case `name` (got {str(data)[:80]})")
        name = data["name"]
        unknown = set(data) - _DECLARED
        if unknown:
            raise TemplateInvalid(f"parameter {name}: unknown keys {', '.join(sorted(unknown))}")
        if data.get("type") not in TYPES:
            raise TemplateInvalid(f"parameter {name}: `type` must be one of {', '.join(TYPES)}")
        if data["type"] == "seed" and name != "seed":
            raise TemplateInvalid(f"parameter {name}: a seed parameter must be named seed")
        if data.get("limit") not in (None, "max_steps", "max_batch"):
            raise TemplateInvalid(f"parameter {name}: `limit` must be max_steps or max_batch")
        if data["type"] == "choice" and not data.get("options"):
            raise TemplateInvalid(f"parameter {name}: a choice needs `options`")
        return cls(name, data["type"], _fills(name, data.get("fills")), data.get("default"),
                   bool(data.get("required", False)), data.get("minimum"), data.get("maximum"),
                   int(data.get("multiple_of", 1)), tuple(data.get("options") or ()), data.get("max_length"),
                   data.get("limit"), str(data.get("description", "")))

    def effective_maximum(self, limits: RequestLimits) -> float | None:
        if self.limit is None:
            return self.maximum
        cap = limits.operator_limit(self.limit)
        return cap if self.maximum is None else min(self.maximum, cap)

    def effective_default(self, limits: RequestLimits) -> Any:
        if self.type == "checkpoint" and self.default is None:
            return limits.checkpoint
        return self.default

    def check(self, checker: FieldChecker, limits: RequestLimits) -> Any:
        """This parameter's value in the request (its default when absent); problems go to `checker`."""
        default = self.effective_default(limits)
        if self.type == "text":
            limit = min(self.max_length or limits.max_prompt_length, limits.max_prompt_length)
            return checker.text(self.name, default or "", limit, required=self.required)
        if self.type == "integer":
            return checker.integer(self.name, default, int(self.minimum if self.minimum is not None else -MAX_SEED),
                                   int(self.effective_maximum(limits) or MAX_SEED), self.multiple_of)
        if self.type == "number":
            return checker.number(self.name, default, float(self.minimum if self.minimum is not None else -1e9),
                                  float(self.effective_maximum(limits) or 1e9))
        if self.type == "choice":
            return checker.choice(self.name, default, self.options)
        if self.type == "seed":
            seed = checker.integer(self.name, None, 0, MAX_SEED)
            return random.randint(0, 2 ** 32 - 1) if seed is None else seed
        if self.type == "checkpoint":
            value = checker.text(self.name, default, 200)
            if isinstance(value, str) and not _CHECKPOINT.fullmatch(value):
                checker.fail(self.name, "must be a plain file name (letters, digits, . _ - and spaces)")
            return value
        return self._check_image(checker)

    def _check_image(self, checker: FieldChecker) -> str | None:
        value = checker.data.get(self.name)
        if value is None and not self.required:
            return None
        if not isinstance(value, str) or not INPUT_ID.fullmatch(value):
            checker.fail(self.name, "needs an uploaded input image (the `image` file of a multipart request)")
        return value

    def describe(self, limits: RequestLimits) -> dict[str, Any]:
        """For callers: {name, type, default, required, minimum, maximum, ...} with the operator's limits applied."""
        described: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required,
                                     "description": self.description}
        default = self.effective_default(limits)
        if default is not None:
            described["default"] = default
        if self.type in ("integer", "number"):
            described.update(minimum=self.minimum, maximum=self.effective_maximum(limits))
            if self.multiple_of != 1:
                described["multiple_of"] = self.multiple_of
        if self.type == "text":
            described["max_length"] = min(self.max_length or limits.max_prompt_length, limits.max_prompt_length)
        if self.type == "seed":
            described.update(minimum=0, maximum=MAX_SEED)
        if self.options:
            described["options"] = list(self.options)
        return described

    def json_schema(self, limits: RequestLimits) -> dict[str, Any]:
        described = self.describe(limits)
        schema: dict[str, Any] = {"description": self.description} if self.description else {}
        if "default" in described:
            schema["default"] = described["default"]
        if self.type in ("integer", "number", "seed"):
            schema["type"] = "number" if self.type == "number" else "integer"
            schema.update({key: described[key] for key in ("minimum", "maximum") if described.get(key) is not None})
            if self.multiple_of != 1:
                schema["multipleOf"] = self.multiple_of
        elif self.type == "choice":
            schema["enum"] = list(self.options)
        else:
            schema["type"] = "string"
            if self.type == "text":
                schema["maxLength"] = described["max_length"]
        return schema


def _fills(name: str, fills: Any) -> tuple[tuple[str, str], ...]:
    """`fills`: ["Node title.input", ...]; the title may itself contain dots (the input name is after the last)."""
    if not isinstance(fills, list) or not fills:
        raise TemplateInvalid(f"parameter {name}: `fills` must list the inputs it fills, as \"Node title.input\"")
    pairs = []
    for target in fills:
        title, _, input_name = str(target).rpartition(".")
        if not title or not input_name:
            raise TemplateInvalid(f"parameter {name}: {target!r} is not \"Node title.input\"")
        pairs.append((title, input_name))
    return tuple(pairs)
