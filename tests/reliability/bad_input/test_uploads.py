"""Uploaded images: broken, truncated, corrupted, bombs, too large; none kept when the request is rejected."""
from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import example, given, strategies as st

from app.images import MAX_IMAGE_PIXELS
from app.inputs import MAX_INPUT_BYTES
from app.request import ENVELOPE
from testkit.images import image_bytes
from tests.reliability.bad_input.property import ACCEPTED, Bench, fuzz
from tests.reliability.bad_input.strategies import (IMAGE_PARAM, JPEG, MAGIC, MAX_PROMPT, PNG, ROUTES, TAKES,
                                                    TEMPLATE_NAMES, expected_form_errors, form_request, png_declaring,
                                                    template_of)


def assert_invalid(response: Any, fields: set[str]) -> None:
    assert response.status_code == 422, (response.status_code, response.get_data()[:500])
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and {f["field"] for f in error["fields"]} == fields, error

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
                         b"%PDF-1.4\n%%EOF", image_bytes(fmt="GIF"), image_bytes(fmt="BMP"),
                         image_bytes(fmt="TIFF"),
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
    bomb = image_bytes((20000, 20000), colour=0, mode="1")
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
    """A whole image with fields that are wrong (a template that takes no image among them): 422 naming them, and
    the upload is not kept."""
    @fuzz(30)
    @example(route="/api/jobs", fields={"prompt": ""})
    @example(route="/generate", fields={"prompt": "x", "template": "txt2img"})
    @given(route=ROUTES, fields=st.fixed_dictionaries({"prompt": st.sampled_from(["", " ", "x" * (MAX_PROMPT + 1)])},
                                                      optional={"steps": st.sampled_from(["0", "many", "9999"]),
                                                                "nsfw": st.just("1"),
                                                                "template": st.sampled_from(["txt2img", "inpaint"])}))
    def run(route: str, fields: dict[str, str]) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data={**fields, "image": (io.BytesIO(PNG), "in.png")},
                                         content_type="multipart/form-data")
        assert outcome == "rejected"
        assert_invalid(response, expected_form_errors(fields, upload=True))
        assert bench.input_images() == [], "a rejected request left its upload in Redis"

    run()


STRENGTHS = (st.floats(-0.5, 1.5).map(repr)
             | st.sampled_from(["0", "1", "1.000001", "2", "-1e-9", "-0", " 0.5 ", "5e-1", "nan", "inf", "-inf", "True",
                                "abc", "0x1", "1/2", "", "\u0660.\u0665"]))


def test_templates_uploads_and_strength_in_forms(bench: Bench) -> None:
    """Multipart forms naming a template or none, with an image or without, with img2img's `strength` or without:
    an upload goes to img2img unless a template is named, and is refused (field `image`) by a template that takes
    none; img2img without an upload fails on `input_image`; strength is img2img's alone (an unknown field of
    txt2img) and between 0 and 1; a form number that does not parse is 422. An accepted job keeps its upload and
    holds the strength as sent; a rejected one keeps no upload."""

    @fuzz(120)
    @example(route="/api/jobs", template=None, upload=True, strength="0.25")
    @example(route="/generate", template="txt2img", upload=True, strength=None)
    @example(route="/api/jobs", template="txt2img", upload=False, strength="0.5")
    @example(route="/api/jobs", template="img2img", upload=False, strength="0.5")
    @example(route="/generate", template="img2img", upload=True, strength="nan")
    @example(route="/api/jobs", template=None, upload=True, strength="abc")
    @example(route="/api/jobs", template="inpaint", upload=True, strength="abc")
    @given(route=ROUTES, template=st.sampled_from([None, "", "inpaint"] + TEMPLATE_NAMES), upload=st.booleans(),
           strength=st.none() | STRENGTHS)
    def run(route: str, template: str | None, upload: bool, strength: str | None) -> None:
        bench.fresh()
        fields = {"prompt": "a fox", "width": "64", "height": "64", "steps": "3"}
        if template is not None:
            fields["template"] = template
        if strength is not None:
            fields["strength"] = strength
        data: dict[str, Any] = dict(fields)
        if upload:
            data["image"] = (io.BytesIO(PNG), "in.png")
        outcome, response = bench.submit(route, data=data, content_type="multipart/form-data")
        expected = expected_form_errors(fields, upload)
        if expected:
            assert outcome == "rejected"
            assert_invalid(response, expected)
            assert bench.input_images() == []
            bench.seen[f"rejected on {','.join(sorted(expected))}"] += 1
            return
        assert outcome == "accepted"
        obj, _ = form_request(fields, upload)
        body = response.get_json()
        stored = bench.client.get(f"/api/jobs/{body.get('id') or body['prompt_id']}").get_json()["request"]
        assert stored["template"] == template_of(obj, upload)
        assert set(stored) <= set(TAKES[stored["template"]]) | set(ENVELOPE), stored
        for name, value in obj.items():
            assert stored[name] == value, name
        image_param = IMAGE_PARAM[stored["template"]]
        assert (image_param is not None) == upload
        if upload:
            assert len(bench.input_images()) == 1
            key = bench.input_images()[0]
            assert (key.decode() if isinstance(key, bytes) else key) == f"t2i:input:{stored[image_param]}"
            assert bench.core.inputs.load(stored[image_param]) == PNG
        else:
            assert bench.input_images() == []
        bench.seen[f"accepted as {stored['template']}"] += 1

    run()
    assert {"accepted as img2img", "accepted as txt2img", "rejected on strength", "rejected on image", "rejected on input_image",
            "rejected on template"} <= set(bench.seen), bench.seen
    bench.sanity()


def test_img2img_naming_an_input_image_that_was_never_uploaded(bench: Bench) -> None:
    """A JSON img2img request naming an upload id (of any form) that was never uploaded: 422 on input_image."""
    @fuzz(20)
    @example(route="/api/jobs", input_id="nope")
    @given(route=ROUTES, input_id=st.text("abcdef0123456789", min_size=1, max_size=32) | st.sampled_from(
        ["nope", "0" * 32, "x\n"]))
    def run(route: str, input_id: str) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, json={"prompt": "x", "template": "img2img", "input_image": input_id})
        assert outcome == "rejected"
        assert_invalid(response, {"input_image"})

    run()


def test_checkpoint_with_a_trailing_newline(bench: Bench) -> None:
    for route in ACCEPTED:
        for checkpoint in ("sd15.safetensors\n", "a\n"):
            outcome, response = bench.submit(route, json={"prompt": "x", "checkpoint": checkpoint})
            assert outcome == "rejected", checkpoint
            assert_invalid(response, {"checkpoint"})


def test_truncated_jpeg_upload(bench: Bench) -> None:
    @fuzz(30)
    @example(route="/api/jobs", cut=len(JPEG) - 10)
    @given(route=ROUTES, cut=st.integers(1, len(JPEG) - 3))
    def run(route: str, cut: int) -> None:
        bench.fresh()
        outcome, response = bench.submit(route, data={"prompt": "fox", "image": (io.BytesIO(JPEG[:cut]), "in.jpg")},
                                         content_type="multipart/form-data")
        assert outcome == "rejected" and response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_image"
        assert not bench.input_images()

    run()
