"""Pictures the simulated GPU "generates": deterministic in their inputs, real PNG and JPEG bytes."""
from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageFilter, ImageOps
from PIL.PngImagePlugin import PngInfo

_GRID = 8
PREVIEW_MAX = 512


def _rng(key: str) -> random.Random:
    return random.Random(hashlib.sha256(key.encode("utf-8")).digest())


def generated(key: str, width: int, height: int) -> Image.Image:
    """A smooth colour field with a few shapes, fully determined by `key` (prompt text, seed, ...)."""
    rng = _rng(key)
    grid = Image.new("RGB", (_GRID, _GRID))
    grid.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(_GRID * _GRID)])
    image = grid.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(1, max(2, width // 2)), y0 + rng.randrange(1, max(2, height // 2))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def with_noise(image: Image.Image, key: str, amount: float) -> Image.Image:
    """Deterministic noise (same key, same pixels): makes PNGs as large as real photos are."""
    if amount <= 0:
        return image
    noise = Image.frombytes("RGB", image.size, _rng(key + "|noise").randbytes(image.width * image.height * 3))
    return Image.blend(image, noise, min(1.0, amount))


def solid(color: int, width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF))


def invert(image: Image.Image) -> Image.Image:
    return ImageOps.invert(image.convert("RGB"))


def blur(image: Image.Image, sigma: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def sharpen(image: Image.Image, radius: int, alpha: float) -> Image.Image:
    return image.filter(ImageFilter.UnsharpMask(radius=radius, percent=int(alpha * 100), threshold=0))


def scale(image: Image.Image, width: int, height: int, center_crop: bool) -> Image.Image:
    if center_crop:
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def blend(image: Image.Image, base: Image.Image, strength: float) -> Image.Image:
    """img2img: keep (1 - strength) of the source picture."""
    return Image.blend(base.convert("RGB").resize(image.size), image, max(0.0, min(1.0, strength)))


def step_preview(final: Image.Image, key: str, fraction: float) -> Image.Image:
    """What a sampler preview looks like part-way: noise fading into the final picture."""
    small = final.copy()
    small.thumbnail((PREVIEW_MAX, PREVIEW_MAX))
    noise = Image.effect_noise(small.size, 64).convert("RGB")
    return Image.blend(noise, small, max(0.0, min(1.0, fraction)))


def png_bytes(image: Image.Image, text: dict[str, str] | None = None, compress_level: int = 4) -> bytes:
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=compress_level)
    return out.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=80)
    return out.getvalue()


def fingerprint(images: list[Image.Image]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(image.tobytes())
    return digest.hexdigest()


def load(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    return ImageOps.exif_transpose(image).convert("RGB")
