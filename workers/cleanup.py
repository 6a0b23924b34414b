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
running: ComfyUI's queue shows it running until its entry is written.

Cleaning up is not part of a job's end: a worker process's Cleaner does it from a thread of its own, BATCH_DELAY
after the end, for every job that ended meanwhile on the same ComfyUI at once (one `GET /queue`, one
`POST /history`). So a job's end is stored, read by its pollers and acknowledged without waiting for ComfyUI to
write a history entry (0.33 s on the real server), and a busy GPU's clean-up costs a request a batch rather than
two a job. What a worker killed in that moment had not cleaned up stays (ComfyUI's history is bounded); a worker
that stops cleans up what it has before it exits."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.comfyui import ComfyUIClient, ComfyUIError
from workers.comfyui.events import ImageRef

log = logging.getLogger("workers.cleanup")

FOLDERS = ("input", "output", "temp")
HISTORY_WRITE_WAIT = 5.0  # seconds
BATCH_DELAY = 1.0  # seconds from a job's end to its clean-up
RECHECK = 0.05  # seconds between looks at the queue while a prompt still runs


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


@dataclass
class _Pending:
    job_id: str
    leftovers: Leftovers
    comfyui_dir: Path | None  # its ComfyUI's folders, where this worker reaches them
    due: float  # monotonic: cleaned up from then on
    deadline: float  # monotonic: the history entry is left if the prompt still runs then


class Cleaner:
    """One per worker process: cleans up after ended jobs from a thread of its own, in batches per ComfyUI."""

    def __init__(self, delay: float = BATCH_DELAY):
        self.delay = delay
        self.lock = threading.Lock()
        self.pending: list[_Pending] = []
        self.in_hand = 0  # jobs taken from `pending` and being cleaned up
        self.arrived = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, job_id: str, leftovers: Leftovers, comfyui_dir: Path | None) -> None:
        """The job has ended (its terminal state is written): clean up after it in a moment."""
        due = time.monotonic() + self.delay
        with self.lock:
            self.pending.append(_Pending(job_id, leftovers, comfyui_dir, due, due + HISTORY_WRITE_WAIT))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="comfyui-cleanup", daemon=True)
                self.thread.start()
        self.arrived.set()

    def flush(self) -> None:
        """Everything now (the worker is stopping), waiting for prompts still running up to HISTORY_WRITE_WAIT."""
        with self.lock:
            for pending in self.pending:
                pending.due = 0.0
        self.arrived.set()
        deadline = time.monotonic() + HISTORY_WRITE_WAIT + 1
        while (self.pending or self.in_hand) and time.monotonic() < deadline:
            time.sleep(RECHECK)

    def _run(self) -> None:
        while True:
            self.arrived.wait(self._wait())
            self.arrived.clear()
            for url, batch in self._take_due().items():
                left = self._clean_up(url, batch)
                with self.lock:
                    self.pending.extend(left)
                    self.in_hand -= len(batch)

    def _wait(self) -> float | None:
        with self.lock:
            if not self.pending:
                return None
            return max(0.0, min(p.due for p in self.pending) - time.monotonic())

    def _take_due(self) -> dict[str, list[_Pending]]:
        """Of each ComfyUI where a job is due, every job waiting: those that ended since come along."""
        now = time.monotonic()
        with self.lock:
            urls = {p.leftovers.comfyui_url for p in self.pending if p.due <= now}
            by_url = {url: [p for p in self.pending if p.leftovers.comfyui_url == url] for url in urls}
            self.pending = [p for p in self.pending if p.leftovers.comfyui_url not in urls]
            self.in_hand += sum(len(batch) for batch in by_url.values())
        return by_url

    @staticmethod
    def _clean_up(url: str, batch: list[_Pending]) -> list[_Pending]:
        try:
            return clean_up(ComfyUIClient(url), batch)
        except Exception:  # the thread must outlive anything: cleaning up is best effort
            log.exception("clean-up on %s failed for jobs %s", url, _ids(batch))
            return []


def clean_up(client: ComfyUIClient, batch: list[_Pending]) -> list[_Pending]:
    """The files of the batch's jobs, then their history entries, on one ComfyUI; returns the jobs whose prompts
    still run there (their entries are not written yet), to look at again."""
    now = time.monotonic()
    try:
        running = set(client.queue().running)
    except ComfyUIError as exc:
        log.warning("jobs %s: could not ask %s whether their prompts still run: %s", _ids(batch), client.url,
                    exc.reason)
        running = set()
    waiting = [p for p in batch if p.job_id in running and now < p.deadline]
    for pending in batch:
        if pending.job_id in running and pending not in waiting:
            log.warning("job %s: its prompt still runs on %s %.0f s after its end; its history entry stays",
                        pending.job_id, client.url, HISTORY_WRITE_WAIT)
    finished = [p for p in batch if p.job_id not in running]
    for pending in batch:
        if pending not in waiting:
            _delete_files(pending)
    try:
        if finished:
            client.delete_history(*[p.job_id for p in finished])
    except ComfyUIError as exc:
        log.warning("jobs %s: could not delete their history entries on %s: %s", _ids(finished), client.url,
                    exc.reason)
    for pending in waiting:
        pending.due = now + RECHECK
    return waiting


def _ids(batch: list[_Pending]) -> str:
    return ", ".join(p.job_id for p in batch)


def _delete_files(pending: _Pending) -> None:
    if pending.comfyui_dir is None:
        return
    for path in pending.leftovers.paths(pending.comfyui_dir):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("job %s: could not delete %s: %s", pending.job_id, path, exc)
