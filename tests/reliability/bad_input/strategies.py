"""What the examples are made of: JSON values, the real fields with valid, near-limit and arbitrary values (and
the README's rules as an independent oracle), images whole and broken, form values."""
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
from app.request import FIELDS, MAX_SEED, SAMPLERS, SCHEDULERS, TEMPLATES
from testkit.images import image_bytes
from tests.reliability.bad_input.property import ACCEPTED, LIMITS

ROUTES = st.sampled_from(sorted(ACCEPTED))
MAX_PROMPT = LIMITS.max_prompt_length
# `input_image` is internal (the id of an uploaded image), not a documented request field: see its own test.
DOCUMENTED = sorted(FIELDS - {"input_image"})

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.sampled_from(["", " ", "\x00", "euler", "txt2img", "img2img", "64", "7.5", "NaN"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)
KEYS = st.sampled_from(DOCUMENTED) | st.text(max_size=12)

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
    "template": st.sampled_from(TEMPLATES) | st.sampled_from(["inpaint", "TXT2IMG", ""]),
    "strength": st.floats(-0.5, 1.5) | st.sampled_from([0, 1, 1.000001, 2, -1e-9, math.nan, math.inf, True]),
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
    "checkpoint": st.sampled_from(["", "sd15.safetensors", "my model v2.ckpt", "a" * 200])
    | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,30}", fullmatch=True),
    "batch_size": st.integers(1, LIMITS.max_batch),
    "template": st.just("txt2img"),
    "strength": st.floats(0, 1),
}


@st.composite
def field_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Objects with the real field names: each present or not; valid, near the limits, or any JSON value at all;
    rarely an extra field."""
    obj: dict[str, Any] = {}
    for name in DOCUMENTED:
        if name == "prompt" or draw(st.integers(0, 2)) == 0:
            kind = draw(st.integers(0, 9))
            obj[name] = draw(VALID[name] if kind <= 5 else NEAR_VALID[name] if kind <= 8 else JSON_VALUES)
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.text(max_size=10).filter(lambda k: k not in FIELDS))] = draw(JSON_VALUES)
    return obj


def expected_errors(obj: dict[str, Any]) -> set[str]:
    """The fields the README says are wrong (an independent reading of the rules, not the app's code)."""
    bad = {key[:100] for key in obj if key not in DOCUMENTED}

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)

    def text_ok(v: Any, limit: int, required: bool = False) -> bool:
        return isinstance(v, str) and len(v) <= limit and "\x00" not in v and (bool(v.strip()) or not required)

    if not text_ok(obj.get("prompt"), MAX_PROMPT, required=True):
        bad.add("prompt")
    if "negative_prompt" in obj and not text_ok(obj["negative_prompt"], MAX_PROMPT):
        bad.add("negative_prompt")
    for name, low, high, multiple in (("width", 64, 4096, 8), ("height", 64, 4096, 8),
                                      ("steps", 1, LIMITS.max_steps, 1),
                                      ("batch_size", 1, LIMITS.max_batch, 1)):
        value = obj.get(name)
        if name in obj and not (is_int(value) and low <= value <= high and value % multiple == 0):
            bad.add(name)
    width, height = obj.get("width", 512), obj.get("height", 512)
    if (width if is_int(width) else 512) * (height if is_int(height) else 512) > LIMITS.max_pixels:
        bad.add("width")
    seed = obj.get("seed")
    if seed is not None and not (is_int(seed) and 0 <= seed <= MAX_SEED):
        bad.add("seed")
    for name, high in (("cfg", 30), ("strength", 1)):
        if name in obj and not (is_number(obj[name]) and 0 <= obj[name] <= high):
            bad.add(name)
    for name, options in (("sampler", SAMPLERS), ("scheduler", SCHEDULERS), ("template", TEMPLATES)):
        if name in obj and not (isinstance(obj[name], str) and obj[name] in options):
            bad.add(name)
    if obj.get("template") == "img2img":  # JSON has no image: img2img needs a multipart upload
        bad.add("input_image")
    if "checkpoint" in obj:
        value = obj["checkpoint"]
        if not (isinstance(value, str) and len(value) <= 200
                and (value == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\- ]*", value))):
            bad.add("checkpoint")
    return bad


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
