"""The simulator's folders (output, input, temp) and ComfyUI's rules for naming and serving files in them."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

from PIL import Image

from comfysim import render

FOLDER_TYPES = ("output", "input", "temp")


class Storage:
    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir).resolve()
        self.dirs = {kind: self.root / kind for kind in FOLDER_TYPES}
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        self.temp_prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))

    def save_images(self, images: list[Image.Image], prefix: str, text: dict[str, str], kind: str = "output") -> list[dict[str, Any]]:
        """Write PNGs named like ComfyUI's SaveImage: <prefix>_00001_.png, counting on from what exists."""
        folder, name, subfolder = self._prefix_parts(prefix, kind)
        counter = self._next_counter(folder, name)
        results = []
        for offset, image in enumerate(images):
            filename = f"{name}_{counter + offset:05}_.png"
            level = 1 if kind == "temp" else 4
            (folder / filename).write_bytes(render.png_bytes(image, text, compress_level=level))
            results.append({"filename": filename, "subfolder": subfolder, "type": kind})
        return results

    def _prefix_parts(self, prefix: str, kind: str) -> tuple[Path, str, str]:
        base = self.dirs[kind]
        subfolder, _, name = prefix.rpartition("/")
        folder = (base / subfolder).resolve()
        if os.path.commonpath((base, folder)) != str(base):
            raise ValueError(f"Saving image outside the output folder is not allowed. full_output_folder: {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        return folder, name, subfolder

    @staticmethod
    def _next_counter(folder: Path, name: str) -> int:
        pattern = re.compile(re.escape(name) + r"_(\d+)_?\.png$")
        counters = [int(m.group(1)) for f in folder.iterdir() if (m := pattern.match(f.name))]
        return max(counters, default=0) + 1

    def view_path(self, filename: str, subfolder: str, kind: str) -> Path | int:
        """The file /view should serve, or the HTTP status ComfyUI answers instead."""
        if not filename or filename[0] == "/" or ".." in filename:
            return 400
        base = self.dirs.get(kind or "output", self.dirs["output"])
        folder = (base / subfolder).resolve() if subfolder else base
        if os.path.commonpath((base, folder)) != str(base):
            return 403
        path = folder / filename
        return path if path.is_file() else 404

    def save_upload(self, filename: str, data: bytes, subfolder: str, overwrite: bool, kind: str) -> dict[str, Any] | int:
        base = self.dirs.get(kind or "input", self.dirs["input"])
        folder = (base / os.path.normpath(subfolder)).resolve() if subfolder else base
        path = (folder / filename).resolve()
        if not filename or os.path.commonpath((base, path)) != str(base):
            return 400
        folder.mkdir(parents=True, exist_ok=True)
        stem, suffix = os.path.splitext(filename)
        number = 1
        while not overwrite and path.exists() and path.read_bytes() != data:
            filename = f"{stem} ({number}){suffix}"
            path = folder / filename
            number += 1
        path.write_bytes(data)
        return {"name": filename, "subfolder": subfolder, "type": kind or "input"}

    def input_files(self) -> list[str]:
        base = self.dirs["input"]
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def read_input(self, name: str) -> bytes:
        path = (self.dirs["input"] / name).resolve()
        if os.path.commonpath((self.dirs["input"], path)) != str(self.dirs["input"]):
            raise ValueError(f"Invalid image path: {name}")
        return path.read_bytes()
