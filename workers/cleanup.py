"""Cleaning up after a job on its ComfyUI: its history entry, and the files it left in ComfyUI's folders.

ComfyUI keeps every finished prompt in its history (10,000 entries by default; /history answers slower as it
grows), and a job's images and uploaded input stay on the GPU host's disk. Once a job has ended (its terminal
state written: nothing will be collected from the history again), its worker deletes the history entry
(`POST /history {"delete": [id]}`) and, where it can reach that ComfyUI's folders (COMFYUI_DIR, the folder
holding input/, output/ and temp/), the files: ComfyUI has no route that deletes a file. Cleaning up is best
effort: a failure is logged and the job's end stands.

ComfyUI sends a prompt's last websocket message before it writes the prompt's history entry (main.py's
prompt_worker: execute, then task_done; a real server was recorded taking 0.33 s between them), and deleting an
entry not yet written deletes nothing. So the delete waits, a few seconds at most, for the prompt to stop
running: ComfyUI's queue shows it running until its entry is written."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.comfyui import ComfyUIClient, ComfyUIError
from workers.comfyui.events import ImageRef

log = logging.getLogger("workers.cleanup")

FOLDERS = ("input", "output", "temp")
HISTORY_WRITE_WAIT = 5.0  # seconds


@dataclass
class Leftovers:
    """What one job left on one ComfyUI."""
    comfyui_url: str
    uploaded: list[str] = field(default_factory=list)  # names LoadImage took, in the input folder
    outputs: list[ImageRef] = field(default_factory=list)

    def paths(self, comfyui_dir: Path) -> list[Path]:
        """The files, inside that ComfyUI's folders only (a name that climbs out of them is skipped)."""
        wanted = [("input", "", name) for name in self.uploaded]
        wanted += [(ref.type, ref.subfolder, ref.filename) for ref in self.outputs]
        paths = []
        for kind, subfolder, name in wanted:
            folder = (comfyui_dir / kind).resolve()
            path = (folder / subfolder / name).resolve()
            if kind in FOLDERS and path.is_relative_to(folder) and path != folder:
                paths.append(path)
        return paths


def clean_up(client: ComfyUIClient, job_id: str, leftovers: Leftovers, comfyui_dir: Path | None) -> None:
    """comfyui_dir: the folder of this worker's own ComfyUI (None: its files are left where they are)."""
    try:
        if _stopped_running(client, job_id):
            client.delete_history(job_id)
        else:
            log.warning("job %s: its prompt still runs on %s after %.0f s; its history entry stays",
                        job_id, client.url, HISTORY_WRITE_WAIT)
    except ComfyUIError as exc:
        log.warning("job %s: could not delete its history entry on %s: %s", job_id, client.url, exc.reason)
    if comfyui_dir is None:
        return
    for path in leftovers.paths(comfyui_dir):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("job %s: could not delete %s: %s", job_id, path, exc)


def _stopped_running(client: ComfyUIClient, prompt_id: str) -> bool:
    deadline = time.monotonic() + HISTORY_WRITE_WAIT
    while prompt_id in client.queue().running:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
