"""Damaged image bytes are refused as InvalidImage, whatever Pillow's parser raises for them."""
from __future__ import annotations

import pytest

from app.images import InvalidImage, inspect_image
from testkit.images import image_bytes

PNG = image_bytes()


def test_a_png_with_a_damaged_ihdr_length_is_an_invalid_image():
    damaged = PNG[:11] + bytes([PNG[11] ^ 1]) + PNG[12:]
    with pytest.raises(InvalidImage, match="not a readable image"):
        inspect_image(damaged)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_every_bit_flip_in_the_header_is_refused_or_read(fmt):
    data = image_bytes(fmt=fmt)
    for position in range(min(64, len(data))):
        for bit in (0, 7):
            damaged = data[:position] + bytes([data[position] ^ (1 << bit)]) + data[position + 1:]
            try:
                inspect_image(damaged)
            except InvalidImage:
                pass
