"""python -m workers --gpu 0 --comfyui http://127.0.0.1:8188: one Celery worker bound to one GPU's ComfyUI."""
from __future__ import annotations

import argparse
import os
import socket


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--gpu", type=int, default=int(os.environ.get("GPU_INDEX", "0")),
                        help="GPU index; names the worker gpuN@host (env GPU_INDEX)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_URL"),
                        help="this GPU's ComfyUI URL (env COMFYUI_URL; else entry N of COMFYUI_URLS; "
                             "else http://127.0.0.1:<8188+N>)")
    parser.add_argument("--hostname", default=os.environ.get("WORKER_HOST", socket.gethostname()),
                        help="host part of the worker name (env WORKER_HOST)")
    parser.add_argument("--loglevel", default=os.environ.get("LOG_LEVEL", "info"))
    return parser.parse_args(argv)


def comfyui_url(args: argparse.Namespace) -> str:
    if args.comfyui:
        return args.comfyui
    urls = [url.strip() for url in os.environ.get("COMFYUI_URLS", "").split(",") if url.strip()]
    if urls:
        if args.gpu >= len(urls):
            raise SystemExit(f"COMFYUI_URLS lists {len(urls)} URL(s); there is none for --gpu {args.gpu}")
        return urls[args.gpu]
    return f"http://127.0.0.1:{8188 + args.gpu}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.comfyui = comfyui_url(args)
    # celeryconfig reads the environment at import: set it before importing the app.
    os.environ["COMFYUI_URL"] = args.comfyui
    os.environ["GPU_INDEX"] = str(args.gpu)
    from app.celery_app import celery
    from workers.health import ComfyUIHealth
    from workers.pipeline import PipelineStep, lookahead
    from workers.reaper import Reaper

    celery.steps["consumer"].add(ComfyUIHealth)
    celery.steps["consumer"].add(Reaper)
    # One pool thread runs the job on the GPU; with pipelining a second one holds the next job, whose prompt
    # waits in ComfyUI's queue (workers/pipeline.py keeps the broker prefetch at one job until then).
    threads = 1
    if lookahead.enabled:
        celery.steps["consumer"].add(PipelineStep)
        threads = 2
    celery.conf.worker_pool = "workers.pool:GPUThreadPool"  # threads, cancelled on terminate (workers/pool.py)
    celery.worker_main(["worker", "--hostname", f"gpu{args.gpu}@{args.hostname}", "--concurrency", str(threads),
                        "--queues", celery.conf.task_default_queue,
                        "--loglevel", args.loglevel, "--task-events",
                        # Workers share nothing with each other (all state is in Redis): listening to every other
                        # worker's events (gossip) and syncing revokes at start-up (mingle) only costs CPU and
                        # Redis traffic that grows with the square of the number of GPUs.
                        "--without-gossip", "--without-mingle"])


if __name__ == "__main__":
    main()
