"""The output store: where a job's images live until they expire. One interface, two stores (Redis, a directory).

A job becomes SUCCESS only after `save` returned: every image is stored before the result names it."""
from __future__ import annotations

import abc
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.celery_app import celery, redis_client
from app.images import inspect_image

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class StoredImage:
    index: int
    content_type: str
    width: int
    height: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(images: list[bytes]) -> list[StoredImage]:
    """Check every image (raises InvalidImage) and say what it is."""
    infos = [inspect_image(data, decode_png=False) for data in images]
    return [StoredImage(index, info.content_type, info.width, info.height, info.size)
            for index, info in enumerate(infos)]


class OutputStore(abc.ABC):
    def __init__(self, expires: int):
        self.expires = expires

    @abc.abstractmethod
    def save(self, job_id: str, images: list[bytes]) -> list[StoredImage]:
        """Store all of a job's images, or none of them."""

    @abc.abstractmethod
    def load(self, job_id: str, index: int) -> bytes | None:
        """One stored image, or None."""


class RedisOutputStore(OutputStore):
    @staticmethod
    def _key(job_id: str, index: int) -> str:
        return f"t2i:out:{job_id}:{index}"

    def save(self, job_id: str, images: list[bytes]) -> list[StoredImage]:
        stored = describe(images)
        pipe = redis_client().pipeline(transaction=True)
        for index, data in enumerate(images):
            pipe.set(self._key(job_id, index), data, ex=self.expires)
        pipe.execute()
        return stored

    def load(self, job_id: str, index: int) -> bytes | None:
        return redis_client().get(self._key(job_id, index))


class DirectoryOutputStore(OutputStore):
    """<root>/<job id>/<index>: written into a temporary folder, then renamed, so a job's folder is whole."""

    def __init__(self, expires: int, root: str | Path):
        super().__init__(expires)
        self.root = Path(root)

    def save(self, job_id: str, images: list[bytes]) -> list[StoredImage]:
        stored = describe(images)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        staging = self.root / f".{job_id}.{uuid.uuid4().hex}"
        staging.mkdir()
        for index, data in enumerate(images):
            (staging / str(index)).write_bytes(data)
        final = self.root / job_id
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return stored

    def load(self, job_id: str, index: int) -> bytes | None:
        path = self.root / job_id / str(index)
        return path.read_bytes() if path.is_file() else None

    def _sweep(self) -> None:
        """Retention: remove what is older than the results that point to it."""
        cutoff = time.time() - self.expires
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


def output_store() -> OutputStore:
    conf = celery.conf
    expires = int(conf.result_expires)
    if conf.text2img_output_store == "directory":
        return DirectoryOutputStore(expires, conf.text2img_output_dir)
    return RedisOutputStore(expires)
