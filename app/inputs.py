"""Input images for img2img, kept in Redis from upload until the job has used them (they expire with results)."""
from __future__ import annotations

import uuid

import redis

from app.images import ImageInfo, InvalidImage, inspect_image

MAX_INPUT_BYTES = 20 * 1024 * 1024


def _key(input_id: str) -> str:
    return f"t2i:input:{input_id}"


class InputImages:
    """expires: seconds an upload is kept (RESULT_EXPIRES)."""

    def __init__(self, client: redis.Redis, expires: int):
        self.redis = client
        self.expires = expires

    def save(self, data: bytes) -> tuple[str, ImageInfo]:
        """Validate and keep an uploaded image; returns its id for the request's `input_image`."""
        if len(data) > MAX_INPUT_BYTES:
            raise InvalidImage(f"image is {len(data)} bytes, more than {MAX_INPUT_BYTES}")
        info = inspect_image(data)
        input_id = uuid.uuid4().hex
        self.redis.set(_key(input_id), data, ex=self.expires)
        return input_id, info

    def load(self, input_id: str) -> bytes | None:
        return self.redis.get(_key(input_id))

    def exists(self, input_id: str) -> bool:
        return bool(self.redis.exists(_key(input_id)))
