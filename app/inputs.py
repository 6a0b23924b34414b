"""Input images for img2img, kept in Redis from upload until the job has used them (they expire with results)."""
from __future__ import annotations

import uuid

from app.celery_app import celery, redis_client
from app.images import ImageInfo, InvalidImage, inspect_image

MAX_INPUT_BYTES = 20 * 1024 * 1024


def save_input(data: bytes) -> tuple[str, ImageInfo]:
    """Validate and keep an uploaded image; returns its id for the request's `input_image`."""
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidImage(f"image is {len(data)} bytes, more than {MAX_INPUT_BYTES}")
    info = inspect_image(data)
    input_id = uuid.uuid4().hex
    redis_client().set(f"t2i:input:{input_id}", data, ex=int(celery.conf.result_expires))
    return input_id, info


def load_input(input_id: str) -> bytes | None:
    return redis_client().get(f"t2i:input:{input_id}")


def input_exists(input_id: str) -> bool:
    return bool(redis_client().exists(f"t2i:input:{input_id}"))
