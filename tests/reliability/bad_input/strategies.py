"""What the examples are made of: JSON values, the templates' real fields with valid, near-limit and arbitrary
values (and the README's rules as an independent oracle), images whole and broken, form values.

Which templates there are, which fields each takes and the options of its choices are read from the shipped
declarations (app/templates/*.params.json); the rules each field is held to are written out here, from the README."""
from __future__ import annotations

import io
import math
import re
import struct
import zlib
from typing import Any

from hypothesis import strategies as st
from PIL import Image

from app.images import MAX_IMAGE_PIXELS
from app.request import ENVELOPE
from app.templates import Templates
from app.validation import MAX_SEED
from testkit.images import image_bytes
from tests.reliability.bad_input.property import ACCEPTED, LIMITS

ROUTES = st.sampled_from(sorted(ACCEPTED))
MAX_PROMPT = LIMITS.max_prompt_length

# The shipped templates (the bench's app serves these: see conftest.py) and what each takes, in declared order.
SHIPPED = Templates()
TEMPLATE_NAMES = SHIPPED.names()
DEFAULT_TEMPLATE = "txt2img"  # DEFAULT_TEMPLATE: a request that names none
DEFAULT_IMAGE_TEMPLATE = "img2img"  # DEFAULT_IMAGE_TEMPLATE: a request that uploads an image and names none
TAKES: dict[str, tuple[str, ...]] = {name: tuple(SHIPPED.get(name).params) for name in TEMPLATE_NAMES}
# A template's image parameter is filled only by a multipart upload (the `image` file), never by a field.
IMAGE_PARAM: dict[str, str | None] = {
    name: next((p for p, param in SHIPPED.get(name).params.items() if param.type == "image"), None)
    for name in TEMPLATE_NAMES}
OPTIONS: dict[tuple[str, str], tuple[Any, ...]] = {
    (name, p): tuple(param.options) for name in TEMPLATE_NAMES for p, param in SHIPPED.get(name).params.items()
    if param.options}
assert {DEFAULT_TEMPLATE, DEFAULT_IMAGE_TEMPLATE} <= set(TEMPLATE_NAMES), TEMPLATE_NAMES
assert IMAGE_PARAM[DEFAULT_TEMPLATE] is None and IMAGE_PARAM[DEFAULT_IMAGE_TEMPLATE] is not None


def documented(template: str) -> list[str]:
    """The fields a JSON request for `template` may carry: its parameters (but its image) and the envelope."""
    return sorted((set(TAKES[template]) - {IMAGE_PARAM[template]}) | set(ENVELOPE))


DOCUMENTED = documented(DEFAULT_TEMPLATE)  # the default template's fields
ALL_FIELDS = sorted(set().union(*map(documented, TEMPLATE_NAMES)))  # every template's fields (strength: img2img's)
IMAGE_PARAMS = sorted({p for p in IMAGE_PARAM.values() if p})  # `input_image`: see its own test
SAMPLERS = OPTIONS[DEFAULT_TEMPLATE, "sampler"]
SCHEDULERS = OPTIONS[DEFAULT_TEMPLATE, "scheduler"]

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.sampled_from(["", " ", "\x00", "euler", "txt2img", "img2img", "64", "7.5", "NaN"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)
KEYS = st.sampled_from(ALL_FIELDS + ["workflow"]) | st.text(max_size=12)

TEXTS = (st.text(max_size=40)
         | st.sampled_from(["x" * MAX_PROMPT, "y" * (MAX_PROMPT + 1), " \t\n", "nul\x00inside", "\u00e9\u4e2d\U0001f98a",
                            "\u200b", "\ufeff", "' OR 1=1 --", "{{7*7}}", "../../etc/passwd"]))
SIZES = (st.integers(0, 600).map(lambda n: n * 8) | st.integers(-100, 5000)
         | st.sampled_from([64, 4096, 4104, 56, 2048, 2056, 0, -64]))
NEAR_VALID: dict[str, st.SearchStrategy[Any]] = {
    "prompt": TEXTS,
    "negative_prompt": TEXTS,
    "width": SIZES,
    "height": SIZES,
    "steps": st.integers(-3, LIMITS.max_steps + 3) | st.sampled_from([20.0, 2 ** 63]),
    "cfg": st.floats(-1, 31) | st.integers(-1, 31)
    | st.sampled_from([math.nan, math.inf, -math.inf, 30.000001, 31, -1e-9, 30, 0, -0.0]),
    "sampler": st.sampled_from(SAMPLERS) | st.sampled_from(["Euler", "euler ", "", "dpmpp_3m"]),
    "scheduler": st.sampled_from(SCHEDULERS) | st.sampled_from(["Karras", "linear", ""]),
    "seed": st.none() | st.integers(-3, 2 ** 70) | st.sampled_from([MAX_SEED, MAX_SEED + 1, -1, 0, 1.0]),
    "checkpoint": st.sampled_from(["", "sd15.safetensors", "my model v2.ckpt", "../models/x.ckpt", "/abs.ckpt",
                                   ".hidden", "a" * 200, "a" * 201, "c:\\x.ckpt", "x\x00.ckpt", "\u00e9.ckpt"])
    | st.text(max_size=12).filter(lambda s: not s.endswith("\n")),  # a trailing newline: its own test
    "batch_size": st.integers(-1, LIMITS.max_batch + 2),
    "template": st.sampled_from(TEMPLATE_NAMES) | st.sampled_from(["inpaint", "TXT2IMG", "", " txt2img"]),
    "strength": st.floats(-0.5, 1.5) | st.sampled_from([0, 1, 1.000001, 2, -1e-9, math.nan, math.inf, True]),
    "priority": st.integers(-2, 12) | st.sampled_from([5.0, True, "9", None]),
    "client": st.sampled_from(["alice", "a" * 64, "a" * 65, "", " bob", "bob smith", "-x", "x@y.z", "\u00e9"])
    | st.text(max_size=8),
    "webhook_url": st.sampled_from(["ftp://example.com/", "http://", "http:/x", "http://a b/", "https://" + "a" * 2000,
                                    "javascript:alert(1)", "", "http://127.0.0.1/hook"]) | st.text(max_size=12),
    "webhook_progress": st.sampled_from([[], [0], [100], [50, "75"], [1.5], list(range(1, 12)), "50", [True], None])
    | st.lists(st.integers(-1, 101), max_size=11),
}


VALID: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and "\x00" not in s),
    "negative_prompt": st.text(max_size=40).filter(lambda s: "\x00" not in s),
    "width": st.integers(8, 64).map(lambda n: n * 8),
    "height": st.integers(8, 64).map(lambda n: n * 8),
    "steps": st.integers(1, LIMITS.max_steps),
    "cfg": st.floats(0, 30) | st.integers(0, 30),
    "sampler": st.sampled_from(SAMPLERS),
    "scheduler": st.sampled_from(SCHEDULERS),
    "seed": st.none() | st.integers(0, MAX_SEED),
    "checkpoint": st.sampled_from(["sd15.safetensors", "my model v2.ckpt", "a" * 200])
    | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,30}", fullmatch=True),
    "batch_size": st.integers(1, LIMITS.max_batch),
    # A template that takes an image is never valid in JSON (the image comes only with a multipart upload).
    "template": st.sampled_from([name for name in TEMPLATE_NAMES if IMAGE_PARAM[name] is None]),
    "strength": st.floats(0, 1),
    "priority": st.integers(0, 9),
    "client": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,20}", fullmatch=True),
    # Valid in form; refused anyway when the server sets no WEBHOOK_SECRET (the bench's does not): see its own test.
    "webhook_url": st.none() | st.none() | st.just("https://example.com/hook"),
    "webhook_progress": st.none() | st.none() | st.none()
    | st.lists(st.integers(1, 99), min_size=1, max_size=10, unique=True).map(sorted),
}


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def text_ok(v: Any, limit: int, required: bool = False) -> bool:
    return isinstance(v, str) and len(v) <= limit and "\x00" not in v and (bool(v.strip()) or not required)


def int_ok(v: Any, low: int, high: int, multiple: int = 1) -> bool:
    return is_int(v) and low <= v <= high and v % multiple == 0


def checkpoint_ok(v: Any) -> bool:
    """A plain file name: letters, digits, . _ - and spaces, not starting with a dot, dash, underscore or space."""
    return isinstance(v, str) and len(v) <= 200 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\- ]*", v) is not None


# The README's rules for each field that is present: (template, value) -> is it valid?
RULES: dict[str, Any] = {
    "prompt": lambda t, v: text_ok(v, MAX_PROMPT, required=True),
    "negative_prompt": lambda t, v: text_ok(v, MAX_PROMPT),
    "width": lambda t, v: int_ok(v, 64, 4096, 8),
    "height": lambda t, v: int_ok(v, 64, 4096, 8),
    "steps": lambda t, v: int_ok(v, 1, LIMITS.max_steps),
    "batch_size": lambda t, v: int_ok(v, 1, LIMITS.max_batch),
    "seed": lambda t, v: v is None or int_ok(v, 0, MAX_SEED),
    "cfg": lambda t, v: is_number(v) and 0 <= v <= 30,
    "strength": lambda t, v: is_number(v) and 0 <= v <= 1,
    "sampler": lambda t, v: isinstance(v, str) and v in OPTIONS[t, "sampler"],
    "scheduler": lambda t, v: isinstance(v, str) and v in OPTIONS[t, "scheduler"],
    "checkpoint": lambda t, v: checkpoint_ok(v),
}
# The request's own fields, whatever its template (README: priority 0-9; client a name of 1-64 letters, digits
# and . _ - @, not starting with a sign).
ENVELOPE_RULES: dict[str, Any] = {
    "priority": lambda v: int_ok(v, 0, 9),
    "client": lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", v)
                                      is not None),
    "webhook_url": lambda v: v is None or (isinstance(v, str) and len(v) <= 2000
                                           and re.fullmatch(r"https?://[^\s/?#]+\S*", v, re.I) is not None),
    # 1 to 10 whole percents from 1 to 99; and only with a webhook_url
    "webhook_progress": lambda v: v is None or (isinstance(v, list) and 0 < len(v) <= 10
                                                and all(is_int(mark) and 1 <= mark <= 99 for mark in v)),
}
REQUIRED = {"prompt"}  # the one field a request must have
# Every field of every shipped template has a rule here and strategies above (a new one must be added).
assert set(ALL_FIELDS) - set(ENVELOPE) == set(RULES) and set(ALL_FIELDS) == set(VALID) == set(NEAR_VALID), ALL_FIELDS
assert set(ENVELOPE) - {"template"} == set(ENVELOPE_RULES)


def template_of(obj: dict[str, Any], upload: bool = False) -> Any:
    """The template a request names, or the default one (another for a request that uploads an image)."""
    return obj.get("template", DEFAULT_IMAGE_TEMPLATE if upload else DEFAULT_TEMPLATE)


def known_template(template: Any) -> bool:
    return isinstance(template, str) and template in TEMPLATE_NAMES


def unknown_fields(obj: dict[str, Any], upload: bool = False) -> set[str]:
    """The fields the request's template does not take (as reported: at most 100 characters of the name)."""
    template = template_of(obj, upload)
    if not known_template(template):
        return set()
    return {key[:100] for key in obj if key not in TAKES[template] and key not in ENVELOPE}


def unknown_field_message(template: str) -> str:
    return f"unknown field (template {template} takes {', '.join(TAKES[template])})"


def expected_errors(obj: dict[str, Any], upload: bool = False) -> set[str]:
    """The fields the README says are wrong (an independent reading of the rules, not the app's code).

    upload: the request comes with an uploaded image (a multipart `image` file). The template decides which
    fields there are: with a template that does not exist, that is the only problem reported. A template that
    takes an image needs the upload (a JSON request never has one: field_objects never sends an upload id), and
    one that takes none refuses it (field `image`)."""
    template = template_of(obj, upload)
    if not known_template(template):
        return {"template"}
    bad = unknown_fields(obj, upload)
    image_param = IMAGE_PARAM[template]
    if upload and image_param is None:
        bad.add("image")
    if not upload and image_param is not None:
        bad.add(image_param)
    for name, valid in RULES.items():
        if name in TAKES[template] and (name in obj or name in REQUIRED) and not valid(template, obj.get(name)):
            bad.add(name)
    bad |= {name for name, valid in ENVELOPE_RULES.items() if name in obj and not valid(obj[name])}
    if obj.get("webhook_progress") is not None and obj.get("webhook_url") is None:
        bad.add("webhook_progress")
    if not bad and obj.get("webhook_url") is not None:
        bad.add("webhook_url")  # the bench's server sets no WEBHOOK_SECRET: webhooks are off
    if {"width", "height"} <= set(TAKES[template]):
        width, height = obj.get("width", 512), obj.get("height", 512)
        if (width if is_int(width) else 512) * (height if is_int(height) else 512) > LIMITS.max_pixels:
            bad.add("width")
    return bad


# A form's strings are converted by the named (or default) template's declared parameter types.
FORM_NUMBERS = {"integer": int, "seed": int, "number": float}
FORM_ENVELOPE_TYPES = {"priority": "integer"}


def form_request(fields: dict[str, str], upload: bool) -> tuple[dict[str, Any], set[str]]:
    """A form as the request it stands for: empty values left out, the numbers of the template it names (or the
    default one) converted; and the fields whose numbers do not parse (those alone are reported)."""
    obj: dict[str, Any] = {name: value for name, value in fields.items() if value != ""}
    template = template_of(obj, upload)
    types = ({p: param.type for p, param in SHIPPED.get(template).params.items()}
             if known_template(template) else {}) | FORM_ENVELOPE_TYPES
    unparsed = set()
    for name, value in list(obj.items()):
        if types.get(name) in FORM_NUMBERS:
            try:
                obj[name] = FORM_NUMBERS[types[name]](value)
            except ValueError:
                unparsed.add(name)
    return obj, unparsed


def expected_form_errors(fields: dict[str, str], upload: bool) -> set[str]:
    obj, unparsed = form_request(fields, upload)
    return unparsed or expected_errors(obj, upload)


@st.composite
def field_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Objects with the real field names: a template (none, one that takes no image, one that takes an image,
    a wrong one, any JSON value), then each of its fields present or not, valid, near the limits or any JSON value
    at all; rarely a field of another template, rarely an extra field."""
    obj: dict[str, Any] = {}
    kind = draw(st.integers(0, 9))
    if kind >= 4:
        obj["template"] = draw(VALID["template"] if kind <= 5 else st.sampled_from(
            [name for name in TEMPLATE_NAMES if IMAGE_PARAM[name] is not None]) if kind <= 7
            else NEAR_VALID["template"] if kind == 8 else JSON_VALUES)
    template = obj["template"] if known_template(obj.get("template")) else DEFAULT_TEMPLATE
    for name in documented(template):
        if name == "template":
            continue
        if name == "prompt" or draw(st.integers(0, 2)) == 0:
            kind = draw(st.integers(0, 9))
            obj[name] = draw(VALID[name] if kind <= 5 else NEAR_VALID[name] if kind <= 8 else JSON_VALUES)
    others = sorted(set(ALL_FIELDS) - set(documented(template)))
    if others and draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(others))
        obj[name] = draw(VALID[name] | NEAR_VALID[name])
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.text(max_size=10).filter(
            lambda k: k not in ALL_FIELDS + IMAGE_PARAMS + ["workflow"]))] = draw(JSON_VALUES)
    return obj


PNG = image_bytes()
JPEG = image_bytes(fmt="JPEG")
WEBP = image_bytes(fmt="WEBP")


def png_declaring(width: int, height: int) -> bytes:
    """A real 64x64 PNG whose IHDR (with a valid CRC) claims width x height."""
    data = bytearray(PNG)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def readable_image(data: bytes) -> bool:
    """An independent look: Pillow decodes the whole picture, of a supported kind and sane size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG", "WEBP") or image.width * image.height > MAX_IMAGE_PIXELS:
                return False
            image.load()
            return True
    except Exception:
        return False


MAGIC = st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a",
                         b"BM", b"II*\x00", b"%PDF-1.4", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x00\x00\x01\x00"])
FILE_BYTES = (st.tuples(MAGIC, st.binary(max_size=300)).map(b"".join)
              | st.tuples(st.sampled_from([PNG, JPEG, WEBP]), st.integers(0, 400)).map(lambda t: t[0][:t[1]])
              | st.just(PNG))
FORM_VALUES = (st.text(max_size=20)
               | st.sampled_from(["64", " 64 ", "6_4", "\u0666\u0664", "64.0", "1e3", "nan", "inf", "-0", "9" * 5000,
                                  "0x40", "", "euler", "img2img", "a red fox"]))
# Browsers percent-encode quotes and backslashes in part names; werkzeug's test client writes them as they are.
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')
