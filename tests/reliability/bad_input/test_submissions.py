"""POST /api/jobs and POST /generate: JSON values, fields, templates, numbers, nesting, encodings, content types,
forms, body sizes, raw workflows."""
from __future__ import annotations

import io
import json
import math
import re
import sys
from typing import Any, Callable

from flask import Flask
from hypothesis import assume, example, given, note, strategies as st
from werkzeug.datastructures import MultiDict

from app.celery_app import Text2ImgCelery
from app.request import ENVELOPE
from app.validation import MAX_SEED
from tests.reliability.bad_input.property import LIMITS, Bench, fuzz
from tests.reliability.bad_input.strategies import (ALL_FIELDS, FILE_BYTES, FORM_VALUES, IMAGE_PARAMS,
                                                    JSON_VALUES, KEYS, NAME_CHARS, PNG, ROUTES, TAKES, expected_errors,
                                                    field_objects, readable_image, template_of, unknown_field_message,
                                                    unknown_fields)

ENVELOPE_DEFAULTS = {"priority": 5, "client": None, "webhook_url": None, "webhook_progress": None}  # not stored when a request has them


def assert_invalid(response: Any, fields: set[str]) -> dict[str, Any]:
    """422 invalid_request naming exactly these fields (a well-formed request whose fields are wrong)."""
    assert response.status_code == 422, (response.status_code, response.get_data()[:500])
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request", error
    assert {f["field"] for f in error["fields"]} == fields, error["fields"]
    return error


def test_random_json_values(bench: Bench) -> None:
    """Any JSON value at all (nested, non-finite floats as NaN/Infinity literals, huge integers): a body that is not
    an object is 400 naming (body); an object is a job or 422 (403 when it holds a raw `workflow`)."""

    @fuzz(150)
    @given(route=ROUTES, value=JSON_VALUES | st.dictionaries(KEYS, JSON_VALUES, max_size=6))
    def run(route: str, value: Any) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data=json.dumps(value), content_type="application/json")
        if not isinstance(value, dict):
            assert outcome == "rejected" and response.status_code == 400
            error = response.get_json()["error"]
            if value is None:  # `null` is read as no JSON at all (the reader's "no body" answer)
                assert error["code"] == "malformed_json"
            else:
                assert error["code"] == "invalid_request" and [f["field"] for f in error["fields"]] == ["(body)"]
        elif "workflow" in value:
            assert outcome == "rejected" and response.status_code == 403
            assert response.get_json()["error"]["code"] == "forbidden"
        elif outcome == "rejected":
            assert response.status_code == 422 and response.get_json()["error"]["code"] == "invalid_request"

    run()
    assert bench.seen["rejected"] >= 100
    bench.sanity()


NUMBERS = {"width", "height", "steps", "cfg", "seed", "batch_size", "strength"}


def test_raw_workflow_without_the_workflows_scope(bench: Bench) -> None:
    """A `workflow` field (any JSON value, beside any other fields, in JSON or a form) from a caller without the
    workflows scope (RAW_WORKFLOWS is off): 403 forbidden naming `workflow`, nothing queued."""

    @fuzz(60)
    @example(route="/api/jobs", workflow={"1": {"class_type": "SaveImage", "inputs": {}}}, obj={"prompt": "x"},
             form=False)
    @example(route="/generate", workflow="{}", obj={}, form=True)
    @given(route=ROUTES, workflow=JSON_VALUES, obj=field_objects(), form=st.booleans())
    def run(route: str, workflow: Any, obj: dict[str, Any], form: bool) -> None:
        bench.fresh()
        if form:
            # Text fields only: a form number that does not parse is refused (422) before the request is read.
            fields = {name: value for name, value in obj.items() if isinstance(value, str) and name not in NUMBERS}
            data = {**fields, "workflow": json.dumps(workflow)}
            outcome, response = bench.submit(route, data=data, content_type="multipart/form-data")
        else:
            outcome, response = bench.submit(route, data=json.dumps({**obj, "workflow": workflow}),
                                             content_type="application/json")
        assert outcome == "rejected" and response.status_code == 403
        error = response.get_json()["error"]
        assert error["code"] == "forbidden" and [f["field"] for f in error["fields"]] == ["workflow"]

    run()
    bench.sanity()


def test_real_field_names_with_random_values(bench: Bench) -> None:
    """Accepted exactly when every field follows the README's rules for the request's template; a rejection (422)
    names exactly the bad fields, an unknown one with the fields its template takes; an accepted job holds the
    request as sent, under its template."""

    @fuzz(300)
    @example(route="/api/jobs", obj={"prompt": "edges", "cfg": 30.000001, "width": 4104,
                                     "height": 56, "steps": LIMITS.max_steps + 1, "seed": MAX_SEED + 1,
                                     "batch_size": LIMITS.max_batch + 1, "checkpoint": ".hidden"})
    @example(route="/generate", obj={"prompt": "edges", "cfg": 30, "width": 64, "height": 4096,
                                     "steps": LIMITS.max_steps, "seed": MAX_SEED,
                                     "batch_size": LIMITS.max_batch, "checkpoint": "a" * 200})
    @example(route="/api/jobs", obj={"prompt": "edges", "width": 2048, "height": 2056})
    @example(route="/api/jobs", obj={"prompt": "edges", "strength": 0.5})  # img2img's, not txt2img's
    @example(route="/generate", obj={"prompt": "edges", "template": "txt2img", "strength": 1})
    @example(route="/api/jobs", obj={"prompt": "edges", "template": "img2img", "strength": 1.000001})
    @example(route="/generate", obj={"prompt": "", "template": "inpaint", "nsfw": 1})  # only the template
    @example(route="/api/jobs", obj={"prompt": "edges", "checkpoint": ""})
    @given(route=ROUTES, obj=field_objects())
    def run(route: str, obj: dict[str, Any]) -> None:
        bench.fresh()
        expected = expected_errors(obj)
        note(f"expected bad fields: {sorted(expected)}")
        outcome, response = bench.submit(route, data=json.dumps(obj), content_type="application/json")
        if expected:
            assert outcome == "rejected"
            error = assert_invalid(response, expected)
            for field in error["fields"]:
                if field["field"] in unknown_fields(obj):
                    assert field["message"] == unknown_field_message(template_of(obj)), field
            bench.seen["unknown field" if unknown_fields(obj) else "no unknown field"] += 1
        else:
            assert outcome == "accepted"
            body = response.get_json()
            job_id = body.get("id") or body["prompt_id"]
            stored = bench.client.get(f"/api/jobs/{job_id}").get_json()["request"]
            assert stored["template"] == template_of(obj)
            assert set(stored) <= set(TAKES[stored["template"]]) | set(ENVELOPE), stored
            for name, value in obj.items():
                if not (name == "seed" and value is None):
                    assert stored.get(name, ENVELOPE_DEFAULTS.get(name)) == value, name

    run()
    assert bench.seen["accepted"] >= 20 and bench.seen["rejected"] >= 20, bench.seen
    assert bench.seen["unknown field"] >= 10, bench.seen
    bench.sanity("/generate")


NUMBER_LITERALS = (st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "1e-400", "-0",
                                    "-0.0", "64.0", "6.4e1", "640e-1", "9223372036854775807", "9223372036854775808",
                                    "18446744073709551616", "0.30000000000000004", "1" + "0" * 4299, "1" + "0" * 4300,
                                    "nan", "inf", "+1", "01", ".5", "1.", "0x10", "1_000", "0", "1", "8", "30",
                                    "30.000001", "31", "1.000001", "2", "-1e-9", "56", "4104", "151", "9"])
                   | st.integers(-(10 ** 80), 10 ** 80).map(str)
                   | st.integers(-100_000, 100_000).map(lambda e: f"1e{e}")
                   | st.integers(1, 8000).map(lambda n: "9" * n))


NUMBER_RANGES = {"cfg": (0, 30, None), "width": (64, 4096, 8), "height": (64, 4096, 8),
                 "steps": (1, LIMITS.max_steps, 1), "batch_size": (1, LIMITS.max_batch, 1),
                 "seed": (0, MAX_SEED, 1)}


def beyond_float(literal: str) -> bool:
    """An integer literal json parses (at most 4300 digits) too large for a float."""
    return re.fullmatch(r"-?[0-9]{1,4300}", literal) is not None and abs(int(literal)) > sys.float_info.max


def test_huge_and_non_finite_numbers_in_the_raw_body(bench: Bench) -> None:
    """Number literals in any field, under either template (or none): what Python's json parser refuses (01, .5,
    0x10, nan, 4301-digit integers) is 400 malformed_json; what it takes (NaN, Infinity, 1e999, 4300-digit
    integers) is a job exactly when the README's rules allow it, whose stored request has only finite numbers,
    else 422 naming exactly the bad fields. (Integers beyond float range in cfg and strength are left to their
    own test below.)"""

    @fuzz(150)
    @example(route="/api/jobs", name="cfg", literal="NaN", template=None)
    @example(route="/generate", name="seed", literal="1" + "0" * 4300, template=None)
    @example(route="/api/jobs", name="width", literal="64.0", template=None)
    @example(route="/api/jobs", name="cfg", literal="30.000001", template="txt2img")
    @example(route="/generate", name="strength", literal="1.000001", template="img2img")
    @example(route="/generate", name="strength", literal="1", template=None)
    @example(route="/api/jobs", name="width", literal="4104", template=None)
    @given(route=ROUTES, name=st.sampled_from(ALL_FIELDS + ["nsfw"]), literal=NUMBER_LITERALS,
           template=st.sampled_from([None, None, "txt2img", "img2img"]))
    def run(route: str, name: str, literal: str, template: str | None) -> None:
        assume(not (name in ("cfg", "strength") and beyond_float(literal)))
        bench.fresh()
        prompt = "" if name == "prompt" else '"prompt": "numbers", '
        named = "" if template is None or name == "template" else f'"template": "{template}", '
        body = "{" + prompt + named + json.dumps(name) + ": " + literal + "}"
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        try:
            parsed = json.loads(body)
        except ValueError:
            assert outcome == "rejected" and response.status_code == 400, literal
            assert response.get_json()["error"]["code"] == "malformed_json"
            return
        expected = expected_errors(parsed)
        note(f"expected bad fields: {sorted(expected)}")
        if expected:
            assert outcome == "rejected"
            assert_invalid(response, expected)
        else:
            assert outcome == "accepted"
            job_id = response.get_json().get("id") or response.get_json()["prompt_id"]
            stored = bench.client.get(f"/api/jobs/{job_id}").get_json()["request"]
            assert all(math.isfinite(v) for v in stored.values() if isinstance(v, float)), stored
            low, high, multiple = NUMBER_RANGES[name]
            assert low <= stored[name] <= high and (multiple is None or stored[name] % multiple == 0), (name, stored)

    run()
    assert bench.seen["accepted"] and bench.seen["rejected"], bench.seen
    bench.sanity()


def test_integers_beyond_float_range_in_number_fields(bench: Bench) -> None:
    """cfg (both templates) and strength (img2img's) of 309 to 4300 digits: 422 naming the field (and img2img's
    missing upload)."""
    @fuzz(30)
    @example(route="/api/jobs", name="cfg", digits=309, template="txt2img")
    @example(route="/generate", name="strength", digits=309, template="img2img")
    @given(route=ROUTES, name=st.sampled_from(["cfg", "strength"]), digits=st.integers(309, 4300),
           template=st.sampled_from(["txt2img", "img2img"]))
    def run(route: str, name: str, digits: int, template: str) -> None:
        assume(name in TAKES[template])
        bench.fresh()
        body = '{"prompt": "x", "template": "%s", "%s": %s}' % (template, name, "9" * digits)
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        assert outcome == "rejected"
        assert_invalid(response, {name} | ({"input_image"} if template == "img2img" else set()))

    run()


def nested_json_is_rejected(bench: Bench, depths: st.SearchStrategy[int], examples: int,
                            parsed: bool) -> Callable[..., None]:
    """parsed: the depths are within what the JSON parser reads (else it gives up: 400 malformed_json)."""
    @fuzz(examples)
    @given(route=ROUTES, depth=depths, opener=st.sampled_from(["[", '{"a": ']),
           where=st.sampled_from(["body", "prompt", "steps", "strength", "nsfw"]))
    def run(route: str, depth: int, opener: str, where: str) -> None:
        bench.fresh()
        nested = opener * depth + "1" + ("]" if opener == "[" else "}") * depth
        body = nested if where == "body" else '{"prompt": "x", "%s": %s}' % (where, nested)
        outcome, response = bench.submit(route, data=body, content_type="application/json")
        assert outcome == "rejected"
        error = response.get_json()["error"]
        if not parsed:
            assert response.status_code == 400 and error["code"] == "malformed_json"
        elif where == "body" and opener == "[":  # well-formed, but not an object
            assert response.status_code == 400 and error["code"] == "invalid_request"
            assert [f["field"] for f in error["fields"]] == ["(body)"]
        elif where == "body":  # an object of one unknown field, without a prompt
            assert_invalid(response, {"a", "prompt"})
        else:
            assert_invalid(response, {where})

    return run


def test_nested_json(bench: Bench) -> None:
    """Arrays and objects nested up to 300 deep, as the body or as a field's value: 400 for a body that is not an
    object, else 422 naming the field; nothing queued."""
    nested_json_is_rejected(bench, st.integers(1, 300), 60, parsed=True)()
    bench.sanity()


def test_json_nested_beyond_the_recursion_limit(bench: Bench) -> None:
    nested_json_is_rejected(bench, st.integers(5_000, 100_000), 15, parsed=False)()


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
        fields.add(draw(st.sampled_from(ALL_FIELDS + IMAGE_PARAMS + ["image"]) | st.text(NAME_CHARS, min_size=1, max_size=8)),
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


def test_bodies_beyond_max_content_length(make_app: Callable[..., Flask], core: Text2ImgCelery) -> None:
    """With MAX_CONTENT_LENGTH = 4096: JSON, multipart and urlencoded bodies over it are 413 JSON, others 415;
    nothing queued. A body just under the limit is accepted by the same app."""
    limit = 4096
    bench = Bench(make_app(max_body_bytes=limit).test_client(), core)

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
