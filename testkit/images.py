"""Test images: made in any size, colour and format, and looked at (size, pixels)."""
from __future__ import annotations

import io
import uuid

from PIL import Image

Colour = tuple[int, int, int] | int


def image_bytes(size: tuple[int, int] = (64, 64), colour: Colour = (20, 120, 220), fmt: str = "PNG",
                mode: str = "RGB") -> bytes:
    """One image of a single colour, encoded as `fmt` (any format Pillow writes)."""
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format=fmt)
    return out.getvalue()


def seeded_colour(seed: str) -> tuple[int, int, int]:
    """A colour of its own for each seed, the same on every run."""
    red, green, blue = uuid.uuid5(uuid.NAMESPACE_URL, seed).bytes[:3]
    return red, green, blue


def image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def pixels(data: bytes) -> bytes:
    """The decoded RGB pixels, to compare images whatever their encoding."""
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()
