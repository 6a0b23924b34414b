"""The output store: where a job's images live until they expire. One interface, two stores (Redis, a directory).

A job becomes SUCCESS only after `save` returned: every image is stored before the result names it."""
from __future__ import annotations

import abc
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from app.images import inspect_image
from app.validation import is_job_id

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
    def __init__(self, expires: int, client: redis.Redis):
        super().__init__(expires)
        self.redis = client

    @staticmethod
    def _key(job_id: str, index: int) -> str:
        return f"t2i:out:{job_id}:{index}"

    def save(self, job_id: str, images: list[bytes]) -> list[StoredImage]:
        stored = describe(images)
        pipe = self.redis.pipeline(transaction=len(images) > 1)  # one SET is whole by itself
        for index, data in enumerate(images):
            pipe.set(self._key(job_id, index), data, ex=self.expires)
        pipe.execute()
        return stored

    def load(self, job_id: str, index: int) -> bytes | None:
        return self.redis.get(self._key(job_id, index))


class DirectoryOutputStore(OutputStore):
    """<root>/<job id>/<index>: written into a temporary folder, then renamed, so a job's folder is whole.

    Retention: at most once a minute per process, a sweep looks at up to SWEEP_BATCH entries (resuming where the
    last one stopped) and removes folders older than the results that point to them. Several workers may sweep
    the same folder at once: an entry another one removed first is skipped."""

    SWEEP_EVERY = 60.0
    SWEEP_BATCH = 500
    def __init__(self, expires: int, root: str | Path):
        super().__init__(expires)
        self.root = Path(root)
        self.last_sweep = float("-inf")
        self.sweep_from = ""  # the sweep resumes after this entry

    def save(self, job_id: str, images: list[bytes]) -> list[StoredImage]:
        stored = describe(images)
        self.root.mkdir(parents=True, exist_ok=True)
        self._maybe_sweep()
        staging = self.root / f".{self._name(job_id)}.{uuid.uuid4().hex}"
        staging.mkdir()
        for index, data in enumerate(images):
            (staging / str(index)).write_bytes(data)
        final = self.root / self._name(job_id)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return stored

    def load(self, job_id: str, index: int) -> bytes | None:
        path = self.root / self._name(job_id) / str(index)
        return path.read_bytes() if path.is_file() else None

    @staticmethod
    def _name(job_id: str) -> str:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id[:64]!r}")
        return job_id

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self.last_sweep < self.SWEEP_EVERY:
            return
        self.last_sweep = now
        self.sweep()

    def sweep(self) -> None:
        """Retention, one bounded batch: remove folders older than the results that point to them."""
        cutoff = time.time() - self.expires
        names = sorted(entry.name for entry in os.scandir(self.root))
        batch = [name for name in names if name > self.sweep_from][:self.SWEEP_BATCH]
        self.sweep_from = batch[-1] if len(batch) == self.SWEEP_BATCH else ""
        for name in batch:
            folder = self.root / name
            try:
                old = folder.is_dir() and folder.stat().st_mtime < cutoff
            except FileNotFoundError:  # another worker's sweep removed it first
                continue
            if old:
                shutil.rmtree(folder, ignore_errors=True)


def output_store(kind: str, expires: int, client: redis.Redis, directory: str) -> OutputStore:
    """kind: OUTPUT_STORE, "redis" or "directory" (the folder OUTPUT_DIR)."""
    if kind == "directory":
        return DirectoryOutputStore(expires, directory)
    return RedisOutputStore(expires, client)
