"""Bad input, property-based: whatever arrives at the web tier, the answer is a job or a 4xx JSON error.

For `POST /api/jobs` and the seeds' `POST /generate`: random JSON, random field types, huge and non-finite
numbers, deep nesting, invalid UTF-8, random bytes under random content types, random multipart forms and
files, bodies over MAX_CONTENT_LENGTH, broken and oversized images. The property, checked on every example:

- the answer is 202 (/api/jobs) or 200 (/generate) naming a job that GET /api/jobs/<id> reports QUEUED, and
  exactly that job was added to the broker list and the registry; or
- a 4xx with a JSON body {"error": {"code", "message"}}, and the broker list (LLEN of the Celery queue) and
  the registry (queue_length, recent) are unchanged. Never a 5xx.

For every route that takes an id or an image index: ids with traversal, encoded slashes, NUL, unicode,
quotes, very long strings and Redis glob characters get 404 JSON (405 for a wrong method), never a 5xx and
never another job's data; and GET /api/jobs?limit=... is 200 or 400.

Hypothesis runs inside each test (so fixtures are set up once per test), derandomized and bounded; Redis is
emptied before each example. Each test ends with a sanity check that a valid request is accepted, and counts
its outcomes so a test that only ever saw one kind of answer fails. Each bug these tests found (and that was
fixed) keeps a test of its own, and its trigger stays out of the general properties.
"""
from __future__ import annotations

import io
import json
import math
import posixpath
import re
import struct
import sys
import zlib
from collections import Counter
from typing import Any, Callable
from urllib.parse import quote, unquote

import pytest
import redis
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, example, given, note, settings, strategies as st
from hypothesis.control import currently_in_test_context
from PIL import Image
from werkzeug.datastructures import MultiDict

from app import registry
from app.celery_app import celery
from app.images import MAX_IMAGE_PIXELS
from app.inputs import MAX_INPUT_BYTES
from app.outputs import output_store
from app.previews import save_preview
from app.request import FIELDS, MAX_SEED, SAMPLERS, SCHEDULERS, TEMPLATES
from tests.services import LiveServer
from web import create_app

ACCEPTED = {"/api/jobs": 202, "/generate": 200}
ROUTES = st.sampled_from(sorted(ACCEPTED))
GOOD = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3}
CONF = celery.conf
MAX_PROMPT = CONF.text2img_max_prompt_length
# `input_image` is internal (the id of an uploaded image), not a documented request field: see its own test.
DOCUMENTED = sorted(FIELDS - {"input_image"})


def fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


# --- the property -------------------------------------------------------------------------------------------


class Bench:
    """A test client on a clean Redis, and the checks every example makes."""

    def __init__(self, client: FlaskClient, r: redis.Redis):
        self.client = client
        self.redis = r
        self.seen: Counter[str] = Counter()

    def fresh(self) -> None:
        self.redis.flushall()

    def queued(self) -> tuple[int, int, list[str]]:
        return (self.redis.llen(CONF.task_default_queue), registry.queue_length(), registry.recent(10_000))

    def input_images(self) -> list[bytes]:
        return self.redis.keys("t2i:input:*")

    def submit(self, route: str, **kwargs: Any) -> tuple[str, Any]:
        """POST to a submission route; checks the property; returns ("accepted" | "rejected", response)."""
        before = self.queued()
        response = self.client.post(route, **kwargs)
        outcome = self.judge(route, response, before)
        self.seen[outcome] += 1
        return outcome, response

    def judge(self, route: str, response: Any, before: tuple[int, int, list[str]]) -> str:
        if currently_in_test_context():
            note(f"{route} -> {response.status_code} {response.get_data()[:300]!r}")
        assert response.status_code < 500, response.get_data()[:500]
        if response.status_code == ACCEPTED[route]:
            body = response.get_json()
            job_id = body["id"] if route == "/api/jobs" else body["prompt_id"]
            assert isinstance(job_id, str) and job_id
            if route == "/api/jobs":
                assert body["state"] == "QUEUED" and body["status_url"] == f"/api/jobs/{job_id}"
            else:
                assert body["status"] == "pending"
            assert isinstance(body["seed"], int) and 0 <= body["seed"] <= MAX_SEED
            llen, length, recent = self.queued()
            assert (llen, length, recent) == (before[0] + 1, before[1] + 1, [job_id] + before[2])
            status = self.client.get(f"/api/jobs/{job_id}")
            assert status.status_code == 200 and status.get_json()["state"] == "QUEUED"
            assert status.get_json()["request"]["seed"] == body["seed"]
            if route == "/generate":
                assert self.client.get(f"/status/{job_id}").get_json()["status"] == "pending"
            return "accepted"
        json_error(response)
        assert self.queued() == before, "a rejected request queued something"
        return "rejected"

    def sanity(self, route: str = "/api/jobs") -> None:
        """The same client accepts a valid request (so the rejections above were about the input)."""
        self.fresh()
        outcome, _ = self.submit(route, json=GOOD)
        assert outcome == "accepted"


def json_error(response: Any, statuses: range | set[int] = range(400, 500)) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.get_data()[:500])
    assert response.mimetype == "application/json", response.get_data()[:500]
    body = json.loads(response.get_data())
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture
def bench(clean_redis: redis.Redis) -> Bench:
    return Bench(create_app({"TESTING": True}).test_client(), clean_redis)


# --- strategies -----------------------------------------------------------------------------------------------

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
    "steps": st.integers(-3, CONF.text2img_max_steps + 3) | st.sampled_from([20.0, 2 ** 63]),
    "cfg": st.floats(-1, 31) | st.integers(-1, 31)
    | st.sampled_from([math.nan, math.inf, -math.inf, 30.000001, 31, -1e-9, 30, 0, -0.0]),
    "sampler": st.sampled_from(SAMPLERS) | st.sampled_from(["Euler", "euler ", "", "dpmpp_3m"]),
    "scheduler": st.sampled_from(SCHEDULERS) | st.sampled_from(["Karras", "linear", ""]),
    "seed": st.none() | st.integers(-3, 2 ** 70) | st.sampled_from([MAX_SEED, MAX_SEED + 1, -1, 0, 1.0]),
    "checkpoint": st.sampled_from(["", "sd15.safetensors", "my model v2.ckpt", "../models/x.ckpt", "/abs.ckpt",
                                   ".hidden", "a" * 200, "a" * 201, "c:\\x.ckpt", "x\x00.ckpt", "\u00e9.ckpt"])
    | st.text(max_size=12).filter(lambda s: not s.endswith("\n")),  # a trailing newline: its own test
    "batch_size": st.integers(-1, CONF.text2img_max_batch + 2),
    "template": st.sampled_from(TEMPLATES) | st.sampled_from(["inpaint", "TXT2IMG", ""]),
    "strength": st.floats(-0.5, 1.5) | st.sampled_from([0, 1, 1.000001, 2, -1e-9, math.nan, math.inf, True]),
}


VALID: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and "\x00" not in s),
    "negative_prompt": st.text(max_size=40).filter(lambda s: "\x00" not in s),
    "width": st.integers(8, 64).map(lambda n: n * 8),
    "height": st.integers(8, 64).map(lambda n: n * 8),
    "steps": st.integers(1, CONF.text2img_max_steps),
    "cfg": st.floats(0, 30) | st.integers(0, 30),
    "sampler": st.sampled_from(SAMPLERS),
    "scheduler": st.sampled_from(SCHEDULERS),
    "seed": st.none() | st.integers(0, MAX_SEED),
    "checkpoint": st.sampled_from(["", "sd15.safetensors", "my model v2.ckpt", "a" * 200])
    | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,30}", fullmatch=True),
    "batch_size": st.integers(1, CONF.text2img_max_batch),
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
                                      ("steps", 1, CONF.text2img_max_steps, 1),
                                      ("batch_size", 1, CONF.text2img_max_batch, 1)):
        value = obj.get(name)
        if name in obj and not (is_int(value) and low <= value <= high and value % multiple == 0):
            bad.add(name)
    width, height = obj.get("width", 512), obj.get("height", 512)
    if (width if is_int(width) else 512) * (height if is_int(height) else 512) > CONF.text2img_max_pixels:
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


def png_bytes(size: tuple[int, int] = (64, 64), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (20, 120, 220) if mode == "RGB" else 1).save(out, format=fmt)
    return out.getvalue()


PNG = png_bytes()
JPEG = png_bytes(fmt="JPEG")
WEBP = png_bytes(fmt="WEBP")


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


# --- POST /api/jobs and POST /generate -------------------------------------------------------------------------


def test_random_json_values(bench: Bench) -> None:
    """Any JSON value at all (nested, non-finite floats as NaN/Infinity literals, huge integers)."""

    @fuzz(150)
    @given(route=ROUTES, value=JSON_VALUES | st.dictionaries(KEYS, JSON_VALUES, max_size=6))
    def run(route: str, value: Any) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data=json.dumps(value), content_type="application/json")
        if not isinstance(value, dict):
            assert outcome == "rejected" and response.status_code == 400

    run()
    assert bench.seen["rejected"] >= 100
    bench.sanity()


def test_real_field_names_with_random_values(bench: Bench) -> None:
    """Accepted exactly when every field follows the README's rules; a rejection names exactly the bad fields;
    an accepted job holds the request as sent."""

    @fuzz(300)
    @example(route="/api/jobs", obj={"prompt": "edges", "cfg": 30.000001, "strength": 1.000001, "width": 4104,
                                     "height": 56, "steps": CONF.text2img_max_steps + 1, "seed": MAX_SEED + 1,
                                     "batch_size": CONF.text2img_max_batch + 1, "checkpoint": ".hidden"})
    @example(route="/generate", obj={"prompt": "edges", "cfg": 30, "strength": 1, "width": 64, "height": 4096,
                                     "steps": CONF.text2img_max_steps, "seed": MAX_SEED,
                                     "batch_size": CONF.text2img_max_batch, "checkpoint": "a" * 200})
    @example(route="/api/jobs", obj={"prompt": "edges", "width": 2048, "height": 2056})
    @given(route=ROUTES, obj=field_objects())
    def run(route: str, obj: dict[str, Any]) -> None:
        bench.fresh()
        expected = expected_errors(obj)
        note(f"expected bad fields: {sorted(expected)}")
        outcome, response = bench.submit(route, data=json.dumps(obj), content_type="application/json")
        if expected:
            assert outcome == "rejected" and response.status_code == 400
            error = response.get_json()["error"]
            assert error["code"] == "invalid_request"
            assert {f["field"] for f in error["fields"]} == expected
        else:
            assert outcome == "accepted"
            body = response.get_json()
            job_id = body.get("id") or body["prompt_id"]
            stored = bench.client.get(f"/api/jobs/{job_id}").get_json()["request"]
            for name, value in obj.items():
                if not (name == "seed" and value is None):
                    assert stored[name] == value, name

    run()
    assert bench.seen["accepted"] >= 20 and bench.seen["rejected"] >= 20, bench.seen
    bench.sanity("/generate")


NUMBER_LITERALS = (st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "1e-400", "-0",
                                    "-0.0", "64.0", "6.4e1", "640e-1", "9223372036854775807", "9223372036854775808",
                                    "18446744073709551616", "0.30000000000000004", "1" + "0" * 4299, "1" + "0" * 4300,
                                    "nan", "inf", "+1", "01", ".5", "1.", "0x10", "1_000", "0", "1", "8", "30",
                                    "30.000001", "31", "1.000001", "2", "-1e-9", "56", "4104", "151", "9"])
                   | st.integers(-(10 ** 80), 10 ** 80).map(str)
                   | st.integers(-100_000, 100_000).map(lambda e: f"1e{e}")
                   | st.integers(1, 8000).map(lambda n: "9" * n))


NUMBER_RANGES = {"cfg": (0, 30, None), "strength": (0, 1, None), "width": (64, 4096, 8), "height": (64, 4096, 8),
                 "steps": (1, CONF.text2img_max_steps, 1), "batch_size": (1, CONF.text2img_max_batch, 1),
                 "seed": (0, MAX_SEED, 1)}


def beyond_float(literal: str) -> bool:
    """An integer literal json parses (at most 4300 digits) too large for a float."""
    return re.fullmatch(r"-?[0-9]{1,4300}", literal) is not None and abs(int(literal)) > sys.float_info.max


def test_huge_and_non_finite_numbers_in_the_raw_body(bench: Bench) -> None:
    """Number literals Python's json parser takes (NaN, Infinity, 1e999, 5000-digit integers) in any field:
    a 4xx, or a job whose stored request has only finite numbers. (Integers beyond float range in cfg and
    strength are left to their own test below.)"""

    @fuzz(150)
    @example(route="/api/jobs", name="cfg", literal="NaN")
    @example(route="/generate", name="seed", literal="1" + "0" * 4300)
    @example(route="/api/jobs", name="width", literal="64.0")
    @example(route="/api/jobs", name="cfg", literal="30.000001")
    @example(route="/generate", name="strength", literal="1.000001")
    @example(route="/api/jobs", name="width", literal="4104")
    @given(route=ROUTES, name=st.sampled_from(DOCUMENTED + ["nsfw"]), literal=NUMBER_LITERALS)
    def run(route: str, name: str, literal: str) -> None:
        assume(not (name in ("cfg", "strength") and beyond_float(literal)))
        bench.fresh()
        prompt = "" if name == "prompt" else '"prompt": "numbers", '
        body = "{" + prompt + json.dumps(name) + ": " + literal + "}"
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        if outcome == "accepted":
            job_id = response.get_json().get("id") or response.get_json()["prompt_id"]
            stored = bench.client.get(f"/api/jobs/{job_id}").get_json()["request"]
            assert all(math.isfinite(v) for v in stored.values() if isinstance(v, float)), stored
            low, high, multiple = NUMBER_RANGES[name]
            assert low <= stored[name] <= high and (multiple is None or stored[name] % multiple == 0), (name, stored)

    run()
    assert bench.seen["accepted"] and bench.seen["rejected"], bench.seen
    bench.sanity()


def test_integers_beyond_float_range_in_number_fields(bench: Bench) -> None:
    @fuzz(30)
    @example(route="/api/jobs", name="cfg", digits=309)
    @given(route=ROUTES, name=st.sampled_from(["cfg", "strength"]), digits=st.integers(309, 4300))
    def run(route: str, name: str, digits: int) -> None:
        bench.fresh()
        body = '{"prompt": "x", "%s": %s}' % (name, "9" * digits)
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        assert outcome == "rejected" and response.status_code == 400
        assert [f["field"] for f in response.get_json()["error"]["fields"]] == [name]

    run()


def nested_json_is_rejected(bench: Bench, depths: st.SearchStrategy[int], examples: int) -> Callable[..., None]:
    @fuzz(examples)
    @given(route=ROUTES, depth=depths, opener=st.sampled_from(["[", '{"a": ']),
           where=st.sampled_from(["body", "prompt", "steps", "nsfw"]))
    def run(route: str, depth: int, opener: str, where: str) -> None:
        bench.fresh()
        nested = opener * depth + "1" + ("]" if opener == "[" else "}") * depth
        body = nested if where == "body" else '{"prompt": "x", "%s": %s}' % (where, nested)
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        assert outcome == "rejected" and response.status_code == 400

    return run


def test_nested_json(bench: Bench) -> None:
    """Arrays and objects nested up to 300 deep, as the body or as a field's value: 400, nothing queued."""
    nested_json_is_rejected(bench, st.integers(1, 300), 60)()
    bench.sanity()


def test_json_nested_beyond_the_recursion_limit(bench: Bench) -> None:
    nested_json_is_rejected(bench, st.integers(5_000, 100_000), 15)()


INVALID_UTF8 = (st.sampled_from([b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xc1\xbf", b"\x80", b"\xbf", b"\xe2\x82",
                                 b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xed\xa0\x80",
                                 b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x8a"])
                | st.binary(min_size=1, max_size=6).filter(lambda b: not _decodes(b, "strict")))


def _decodes(data: bytes, errors: str) -> bool:
    try:
        data.decode("utf-8", errors)
        return True
    except UnicodeDecodeError:
        return False


def test_invalid_utf8(bench: Bench) -> None:
    """Invalid UTF-8 inside a JSON string (or a key) is 400 malformed_json. UTF-8-encoded surrogates
    (ED A0 80...) are let through by Python's json (it decodes with 'surrogatepass'): those may be accepted."""

    @fuzz(120)
    @given(route=ROUTES, before=st.text(max_size=10), bad=INVALID_UTF8, after=st.text(max_size=10),
           in_key=st.booleans())
    def run(route: str, before: str, bad: bytes, after: str, in_key: bool) -> None:
        bench.fresh()
        text = json.dumps(before)[1:-1].encode() + bad + json.dumps(after)[1:-1].encode()
        body = (b'{"prompt": "p", "' + text + b'": 1}') if in_key else (b'{"prompt": "' + text + b'"}')
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        if not _decodes(body, "surrogatepass"):
            assert response.status_code == 400 and response.get_json()["error"]["code"] == "malformed_json"

    run()
    assert bench.seen["rejected"] >= 60, bench.seen
    bench.sanity()


CONTENT_TYPES = (st.sampled_from([None, "application/json", "application/json; charset=utf-8",
                                  "application/json; charset=latin-1", "APPLICATION/JSON", "application/json;;;",
                                  "multipart/form-data", "multipart/form-data; boundary=xyz",
                                  "multipart/form-data; boundary=", "multipart/form-data; boundary=\"\"",
                                  "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=x",
                                  "text/plain", "application/octet-stream", "image/png", "application/merge-patch+json",
                                  "text/json", "*/*", "", ";"])
                 | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40))
BODIES = (st.binary(max_size=600)
          | st.sampled_from([b"", b"null", b"{}", b"[]", b'"prompt"', b'{"prompt": "x"}', b"prompt=x",
                             b"prompt=x&steps=3&width=64&height=64", b"--xyz\r\nContent-Disposition: form-data; "
                             b'name="prompt"\r\n\r\nfox\r\n--xyz--\r\n', b"--xyz\r\n\r\n", b"--xyz--", b"\xef\xbb\xbf{}",
                             b'\xef\xbb\xbf{"prompt": "bom"}', '{"prompt": "x"}'.encode("utf-16"), b"\x00" * 64])
          | st.tuples(st.sampled_from([b"prompt=", b"--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n",
                                       b'{"prompt": "']), st.binary(max_size=200)).map(b"".join))
VALID_BODIES = [("application/json", b'{"prompt": "x"}'), ("application/json; charset=utf-8", b'{"prompt": "x"}'),
                ("application/x-www-form-urlencoded", b"prompt=x&steps=3&width=64&height=64"),
                ("multipart/form-data; boundary=xyz",
                 b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nfox\r\n--xyz--\r\n')]
KNOWN_TYPES = ("application/json", "multipart/form-data", "application/x-www-form-urlencoded")


def test_random_bytes_under_random_content_types(bench: Bench) -> None:
    """Any bytes under any Content-Type (or none): a content type the API does not take is 415."""

    @fuzz(250)
    @given(route=ROUTES, request=st.tuples(CONTENT_TYPES, BODIES) | st.sampled_from(VALID_BODIES))
    def run(route: str, request: tuple[str | None, bytes]) -> None:
        content_type, body = request
        bench.fresh()
        headers = {} if content_type is None else {"Content-Type": content_type}
        outcome, response = bench.submit(route, data=body, headers=headers)
        mimetype = (content_type or "").split(";")[0].strip().lower()
        if mimetype not in KNOWN_TYPES:
            assert response.status_code == 415 and response.get_json()["error"]["code"] == "unsupported_media_type"

    run()
    assert bench.seen["accepted"] >= 10 and bench.seen["rejected"] >= 100, bench.seen
    bench.sanity("/generate")


@st.composite
def multipart_forms(draw: st.DrawFn) -> tuple[MultiDict, list[tuple[str, str, bytes]]]:
    fields = MultiDict()
    if draw(st.integers(0, 3)):
        fields.add("prompt", draw(FORM_VALUES | st.just("a fox")))
    for _ in range(draw(st.integers(0, 5))):
        fields.add(draw(st.sampled_from(DOCUMENTED + ["image", "input_image"]) | st.text(NAME_CHARS, min_size=1, max_size=8)),
                   draw(FORM_VALUES))
    files = [(draw(st.sampled_from(["image", "image", "file", "images", "Image"]) | st.text(NAME_CHARS, min_size=1, max_size=6)),
              draw(st.sampled_from(["in.png", "x.jpg", "", "../../etc/passwd", "a\u00e9.png", "x" * 300])
                   | st.text(NAME_CHARS, max_size=12)),
              draw(FILE_BYTES))
             for _ in range(draw(st.integers(0, 2)))]
    return fields, files


def test_random_multipart_forms_and_files(bench: Bench) -> None:
    """Random form fields (real names with odd strings, unknown names) and random files (random names, random
    bytes, image magic numbers, truncated real images): an `image` file that is not a whole image is rejected."""

    @fuzz(200)
    @example(route="/api/jobs", form=(MultiDict({"prompt": "fox"}), [("image", "in.png", PNG)]))
    @given(route=ROUTES, form=multipart_forms())
    def run(route: str, form: tuple[MultiDict, list[tuple[str, str, bytes]]]) -> None:
        bench.fresh()
        fields, files = form
        data = MultiDict(fields)
        for name, filename, content in files:
            data.add(name, (io.BytesIO(content), filename))
        outcome, response = bench.submit(route, data=data, content_type="multipart/form-data")
        image = next(((filename, content) for name, filename, content in files if name == "image"), None)
        if image is not None and image[0] and image[1] and not readable_image(image[1]):
            assert outcome == "rejected", f"accepted an image field that is not an image: {image[1][:40]!r}"
        if outcome == "rejected" and image is None:
            assert not bench.input_images()

    run()
    assert bench.seen["accepted"] >= 10 and bench.seen["rejected"] >= 50, bench.seen
    bench.sanity()


def test_bodies_beyond_max_content_length(clean_redis: redis.Redis) -> None:
    """With MAX_CONTENT_LENGTH = 4096: JSON, multipart and urlencoded bodies over it are 413 JSON, others 415;
    nothing queued. A body just under the limit is accepted by the same app."""
    limit = 4096
    bench = Bench(create_app({"TESTING": True, "MAX_CONTENT_LENGTH": limit}).test_client(), clean_redis)

    @fuzz(40)
    @example(route="/api/jobs", size=limit + 1, kind="json")
    @given(route=ROUTES, size=st.integers(limit + 1, 400_000), kind=st.sampled_from(
        ["json", "multipart", "urlencoded", "text", "none", "octet"]))
    def run(route: str, size: int, kind: str) -> None:
        bench.fresh()
        if kind == "multipart":
            data = {"prompt": "fox", "image": (io.BytesIO(PNG + b"\0" * size), "in.png")}
            outcome, response = bench.submit(route, data=data, content_type="multipart/form-data")
        else:
            body = json.dumps({"prompt": "x" * size}) if kind == "json" else "prompt=" + "x" * size
            content_type = {"json": "application/json", "urlencoded": "application/x-www-form-urlencoded",
                            "text": "text/plain", "octet": "application/octet-stream"}.get(kind)
            headers = {"Content-Type": content_type} if content_type else {}
            outcome, response = bench.submit(route, data=body, headers=headers)
        assert outcome == "rejected"
        if kind in ("json", "multipart", "urlencoded"):
            assert response.status_code == 413 and response.get_json()["error"]["code"] == "request_entity_too_large"
        else:
            assert response.status_code == 415

    run()
    bench.fresh()
    assert bench.submit("/api/jobs", json={"prompt": "x" * 1000})[0] == "accepted"
    assert bench.submit("/generate", data={"prompt": "fox", "image": (io.BytesIO(PNG), "in.png")},
                        content_type="multipart/form-data")[0] == "accepted"


# --- uploads ---------------------------------------------------------------------------------------------------


def test_uploads_that_are_not_whole_images(bench: Bench) -> None:
    """Non-image files, PNGs truncated before their end chunk, PNGs with a corrupted byte, IHDR dimensions of
    zero or beyond MAX_IMAGE_PIXELS (decompression bombs): 400 invalid_image, nothing queued or stored."""
    end_chunk = len(PNG) - 12  # IEND: 4 length + 4 type + 4 CRC

    @fuzz(150)
    @example(route="/api/jobs", data=png_declaring(0, 64))
    @example(route="/api/jobs", data=png_declaring(2 ** 32 - 1, 2 ** 32 - 1))
    @example(route="/generate", data=png_declaring(8193, 8192))
    @given(route=ROUTES, data=st.one_of(
        st.integers(1, end_chunk - 1).map(lambda n: PNG[:n]),
        st.tuples(st.integers(8, end_chunk - 1), st.integers(1, 255)).map(
            lambda t: PNG[:t[0]] + bytes([PNG[t[0]] ^ t[1]]) + PNG[t[0] + 1:]),
        st.tuples(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1)).filter(
            lambda wh: wh[0] * wh[1] == 0 or wh[0] * wh[1] > MAX_IMAGE_PIXELS).map(lambda wh: png_declaring(*wh)),
        st.tuples(MAGIC, st.binary(min_size=1, max_size=400)).map(b"".join),
        st.sampled_from([b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                         b"%PDF-1.4\n%%EOF", png_bytes(fmt="GIF"), png_bytes(fmt="BMP"), png_bytes(fmt="TIFF"),
                         b"\x89PNG\r\n\x1a\n"])))
    def run(route: str, data: bytes) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data={"prompt": "fox", "image": (io.BytesIO(data), "in.png")},
                                         content_type="multipart/form-data")
        assert outcome == "rejected" and response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "invalid_image" and error["fields"][0]["field"] == "image"
        assert not bench.input_images()

    run()
    bench.sanity()
    bench.fresh()
    assert bench.submit("/api/jobs", data={"prompt": "fox", "image": (io.BytesIO(PNG), "in.png")},
                        content_type="multipart/form-data")[0] == "accepted"


def test_decompression_bomb_png(bench: Bench) -> None:
    """A ~50 KB PNG declaring 20000 x 20000 pixels: 400 invalid_image, nothing queued, nothing stored."""
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG")
    bomb = out.getvalue()
    assert len(bomb) < 100_000
    for route in ACCEPTED:
        outcome, response = bench.submit(route, data={"prompt": "fox", "image": (io.BytesIO(bomb), "bomb.png")},
                                         content_type="multipart/form-data")
        assert outcome == "rejected" and response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_image"
        assert not bench.input_images()
    bench.sanity()


@pytest.mark.parametrize("route", sorted(ACCEPTED))
def test_oversize_image(bench: Bench, route: str) -> None:
    """An image file over MAX_INPUT_BYTES (but under MAX_CONTENT_LENGTH) is 413 too_large, nothing queued or
    stored; the same PNG (trailing zeros after its IEND chunk) at exactly MAX_INPUT_BYTES is taken."""
    def send(size: int) -> tuple[str, Any]:
        data = PNG + b"\0" * (size - len(PNG))
        return bench.submit(route, data={"prompt": "fox", "image": (io.BytesIO(data), "big.png")},
                            content_type="multipart/form-data")

    outcome, response = send(MAX_INPUT_BYTES + 1)
    assert outcome == "rejected" and response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"
    assert response.get_json()["error"]["fields"][0]["field"] == "image"
    assert not bench.input_images()
    assert send(MAX_INPUT_BYTES)[0] == "accepted"


def test_rejected_request_keeps_no_uploaded_image(bench: Bench) -> None:
    @fuzz(20)
    @example(route="/api/jobs", fields={"prompt": ""})
    @given(route=ROUTES, fields=st.fixed_dictionaries({"prompt": st.sampled_from(["", " ", "x" * (MAX_PROMPT + 1)])},
                                                      optional={"steps": st.sampled_from(["0", "many", "9999"]),
                                                                "nsfw": st.just("1")}))
    def run(route: str, fields: dict[str, str]) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data={**fields, "image": (io.BytesIO(PNG), "in.png")},
                                         content_type="multipart/form-data")
        assert outcome == "rejected" and response.status_code == 400
        assert bench.input_images() == [], "a rejected request left its upload in Redis"

    run()


def test_img2img_naming_an_input_image_that_was_never_uploaded(bench: Bench) -> None:
    @fuzz(20)
    @example(route="/api/jobs", input_id="nope")
    @given(route=ROUTES, input_id=st.text("abcdef0123456789", min_size=1, max_size=32) | st.sampled_from(
        ["nope", "0" * 32, "x\n"]))
    def run(route: str, input_id: str) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, json={"prompt": "x", "template": "img2img", "input_image": input_id})
        assert outcome == "rejected" and response.status_code == 400

    run()


def test_checkpoint_with_a_trailing_newline(bench: Bench) -> None:
    for route in ACCEPTED:
        for checkpoint in ("sd15.safetensors\n", "a\n"):
            outcome, response = bench.submit(route, json={"prompt": "x", "checkpoint": checkpoint})
            assert outcome == "rejected" and response.status_code == 400, checkpoint


def test_truncated_jpeg_upload(bench: Bench) -> None:
    @fuzz(30)
    @example(route="/api/jobs", cut=len(JPEG) - 10)
    @given(route=ROUTES, cut=st.integers(1, len(JPEG) - 3))
    def run(route: str, cut: int) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data={"prompt": "fox", "image": (io.BytesIO(JPEG[:cut]), "in.jpg")},
                                         content_type="multipart/form-data")
        assert outcome == "rejected" and response.status_code == 400

    run()


# --- ids and image indexes ---------------------------------------------------------------------------------------

INJECTIONS = ["", ".", "..", "../", "../../etc/passwd", "..\\..\\windows", "%2e%2e%2f", "%252e%252e%252f", "%2F", "%00",
              "\x00", "%", "%zz", "%ff%fe", "*", "?", "[", "]", "[a-f0-9]*", "t2i:job:*", "celery-task-meta-*", "\\*",
              "' OR '1'='1", '"', "`", "<script>alert(1)</script>", "\n", "\r\n", " ", "\t", "\u202e", "\u00fc",
              "\U0001f98a", "\ufffd", "a" * 64, "b" * 65, "c" * 5000, "-", "_", "~", "$", "{}", "0", "-1", "1e3",
              "nope", "\u0660", "\uff10", "images", "preview"]
PIECES = st.sampled_from(INJECTIONS) | st.text(max_size=6)
CALLS = [("GET", "/api/jobs/{id}"), ("GET", "/api/jobs/{id}/images/0"), ("GET", "/api/jobs/{id}/preview"),
         ("DELETE", "/api/jobs/{id}"), ("GET", "/status/{id}"), ("GET", "/result/{id}"),
         ("GET", "/api/jobs/{job}/images/{id}"),
         ("PUT", "/api/jobs/{id}"), ("PATCH", "/api/jobs/{id}"), ("POST", "/api/jobs/{id}"),
         ("POST", "/status/{id}"), ("DELETE", "/result/{id}"), ("POST", "/api/jobs/{id}/images/0"),
         ("DELETE", "/api/jobs/{id}/preview")]


def legitimate(path: str, ids: list[str]) -> bool:
    """Would this path, once decoded and normalised (as a browser or proxy might), be a real route of our jobs?"""
    decoded = posixpath.normpath(re.sub("/+", "/", unquote(path, errors="replace")))
    alternatives = "|".join(map(re.escape, ids))
    return re.fullmatch(rf"/(api/jobs|status|result)/({alternatives})(/preview|/images/0)?/?", decoded) is not None


def test_injected_ids_and_indexes(bench: Bench) -> None:
    """Job ids and image indexes with traversal, encoded slashes, NUL, unicode, quotes, long strings and Redis glob
    characters, alone or around real ids, on every id route and method: 404 (405 for a method the route does not
    take) JSON, never a 5xx, never a job's data; DELETE never cancels a job it did not name."""
    queued_id = bench.client.post("/api/jobs", json=GOOD).get_json()["id"]
    save_preview(queued_id, "image/jpeg", b"\xff\xd8SECRET-PREVIEW")
    done_id = bench.client.post("/api/jobs", json=GOOD).get_json()["id"]
    stored = output_store().save(done_id, [PNG])
    celery.backend.store_result(done_id, {"images": [{**s.to_dict(), "url": f"/api/jobs/{done_id}/images/{s.index}"}
                                                     for s in stored], "seed": 1}, "SUCCESS")
    # Sanity: the real ids do answer with data, so a 404 below is about the id.
    assert bench.client.get(f"/api/jobs/{done_id}/images/0").data == PNG
    assert bench.client.get(f"/api/jobs/{queued_id}/preview").data == b"\xff\xd8SECRET-PREVIEW"
    real = [queued_id, done_id]
    tricks = (st.tuples(PIECES, st.sampled_from(real), PIECES).map("".join)
              | st.tuples(st.sampled_from(real), st.integers(0, 35), st.sampled_from(["*", "?", "[0-9a-f]", "\\", "\n"]))
              .map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:])
              | st.sampled_from(real).map(lambda i: i.upper())
              | st.sampled_from(real).map(lambda i: i + "\n"))
    ids = PIECES | st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=80) | tricks

    @fuzz(300)
    @example(call=("GET", "/api/jobs/{id}"), job_id=queued_id + "\n", safe="")
    @example(call=("GET", "/api/jobs/{job}/images/{id}"), job_id="00", safe="")
    @example(call=("GET", "/api/jobs/{id}/preview"), job_id=queued_id[:-1] + "*", safe="")
    @given(call=st.sampled_from(CALLS), job_id=ids, safe=st.sampled_from(["", "/", "/%"]))
    def run(call: tuple[str, str], job_id: str, safe: str) -> None:
        method, template = call
        path = template.format(id=quote(job_id, safe=safe), job=done_id)
        assume(not legitimate(path, real))
        note(f"{method} {path}")
        response = bench.client.open(path, method=method)
        if response.status_code == 308:  # werkzeug merges repeated slashes: follow it once
            response = bench.client.open(response.headers["Location"], method=method)
        assert response.status_code < 500
        expected = {404} if (method, template) in CALLS[:7] else {405, 404}
        if method == "DELETE" or template.endswith("/images/0"):
            expected |= {405}  # a decoded %2F can land on another route that does not take this method
        error = json_error(response, expected)
        assert error["code"] in ("not_found", "method_not_allowed")
        bench.seen[str(response.status_code)] += 1
        assert bench.client.get(f"/api/jobs/{queued_id}").get_json()["state"] == "QUEUED"
        assert not bench.redis.exists(f"t2i:cancel:{done_id}")

    run()
    assert bench.seen["404"] >= 150 and bench.seen["405"] >= 20, bench.seen
    assert bench.queued()[:2] == (2, 1)  # the queued job still queued; the finished one stays finished
    assert bench.client.get(f"/api/jobs/{done_id}").get_json()["state"] == "SUCCESS"


LIMITS = (st.integers(-5, 120).map(str) | st.text(max_size=8)
          | st.sampled_from(["", " 5", "5 ", "+5", "5.0", "1e1", "0x10", "05", "0" * 50 + "7", "\u0665", "\uff15",
                             "\u00b2", "\u2465", "1" * 5000, "%", "*", "100", "101", "0"]))


def digits_int_refuses(limit: str) -> bool:
    """str.isdigit() is True but int() fails: superscripts, circled digits..., or more than 4300 digits."""
    return limit.isdigit() and (len(limit) > 4300 or not limit.isdecimal())


def recent_jobs_answer_200_or_400(bench: Bench, limits: st.SearchStrategy[str], examples: int) -> Callable[..., None]:
    ids = [bench.client.post("/api/jobs", json={**GOOD, "prompt": f"p{n}"}).get_json()["id"] for n in range(3)]

    @fuzz(examples)
    @given(limit=limits)
    def run(limit: str) -> None:
        response = bench.client.get("/api/jobs", query_string={"limit": limit})
        assert response.status_code < 500, response.get_data()[:300]
        ascii_digits = re.fullmatch("[0-9]+", limit) is not None
        if ascii_digits and len(limit.lstrip("0")) <= 3 and 1 <= int(limit) <= 100:
            assert response.status_code == 200
        if response.status_code == 200:
            n = int(limit)
            assert [job["id"] for job in response.get_json()["jobs"]] == ids[::-1][:n]
            bench.seen["200"] += 1
        else:
            error = json_error(response, {400})
            assert error["fields"][0]["field"] == "limit"
            bench.seen["400"] += 1

    return run


def test_recent_jobs_limit(bench: Bench) -> None:
    """GET /api/jobs?limit=<anything>: 200 with at most `limit` jobs, newest first, for 1-100; else 400 JSON.
    (Digit strings int() refuses are left to their own test below.)"""
    recent_jobs_answer_200_or_400(bench, LIMITS.filter(lambda s: not digits_int_refuses(s)), 150)()
    assert bench.seen["200"] >= 20 and bench.seen["400"] >= 20, bench.seen


def test_recent_jobs_limit_of_digits_int_refuses(bench: Bench) -> None:
    refused = (st.sampled_from(["\u00b2", "\u00b3", "\u2465", "\u2081", "1\u00b2"])
               | st.integers(4301, 6000).map(lambda n: "1" * n))
    recent_jobs_answer_200_or_400(bench, refused, 20)()


# --- over a real socket ------------------------------------------------------------------------------------------


@pytest.fixture
def small_server(clean_redis: redis.Redis) -> Any:
    server = LiveServer(create_app({"MAX_CONTENT_LENGTH": 4096})).start()
    yield server
    server.stop()


def wire_error(response: requests.Response, statuses: set[int]) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def test_ids_over_the_wire(small_server: LiveServer, clean_redis: redis.Redis) -> None:
    """Through a real HTTP server: ids of percent-encoded arbitrary bytes (invalid UTF-8, NUL, %2F) are 404/405
    JSON, never a 5xx; a real job's id answers over the same server."""
    session = requests.Session()
    url = small_server.url
    seen: Counter[int] = Counter()

    @fuzz(80)
    @example(raw=b"../../etc/passwd\x00", method="GET", template="/api/jobs/{}")
    @given(raw=st.binary(max_size=60), method=st.sampled_from(["GET", "DELETE", "PUT"]),
           template=st.sampled_from(["/api/jobs/{}", "/api/jobs/{}/preview", "/api/jobs/{}/images/0", "/status/{}",
                                     "/result/{}"]))
    def run(raw: bytes, method: str, template: str) -> None:
        path = template.format("".join(f"%{byte:02X}" for byte in raw))
        response = session.request(method, url + path, timeout=10)
        wire_error(response, {404, 405})
        seen[response.status_code] += 1

    run()
    assert seen[404] >= 30 and seen[405] >= 5, seen
    accepted = session.post(url + "/api/jobs", json=GOOD, timeout=10)
    assert accepted.status_code == 202 and clean_redis.llen(CONF.task_default_queue) == 1
    assert session.get(url + accepted.json()["status_url"], timeout=10).json()["state"] == "QUEUED"


def test_chunked_bodies_beyond_max_content_length(small_server: LiveServer, clean_redis: redis.Redis) -> None:
    """Chunked bodies over MAX_CONTENT_LENGTH (4096) are 413 JSON and queue nothing."""
    session = requests.Session()
    url = small_server.url

    @fuzz(30)
    @example(size=10_000, kind="application/json", padding="spaces", route="/api/jobs")
    @example(size=10_000, kind="application/x-www-form-urlencoded", padding="spaces", route="/generate")
    @given(size=st.integers(4097, 200_000), route=ROUTES, padding=st.sampled_from(["spaces", "value"]),
           kind=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=xyz"]))
    def run(size: int, kind: str, padding: str, route: str) -> None:
        clean_redis.flushall()
        if kind.startswith("multipart"):
            body = (b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nfox\r\n--xyz\r\n'
                    b'Content-Disposition: form-data; name="negative_prompt"\r\n\r\n' + b"x" * size + b"\r\n--xyz--\r\n")
        elif kind == "application/json":
            body = b'{"prompt": "x"}' + b" " * size if padding == "spaces" else b'{"prompt": "' + b"x" * size + b'"}'
        else:
            body = b"prompt=x&" + b"&" * size if padding == "spaces" else b"prompt=" + b"x" * size
        chunks = (body[i:i + 1024] for i in range(0, len(body), 1024))
        response = session.post(url + route, data=chunks, headers={"Content-Type": kind}, timeout=10)
        assert clean_redis.llen(CONF.task_default_queue) == 0 and registry.recent() == [], "queued"
        assert wire_error(response, {413})["code"] == "request_entity_too_large"

    run()
