"""python -m workers --gpu 0 --comfyui http://127.0.0.1:8188: one Celery worker bound to one GPU's ComfyUI."""
from __future__ import annotations

import argparse

from celery.signals import worker_shutdown

from app.dispatch import worker_queue
from app.settings import Settings
from workers.capabilities import CapabilitiesStep
from workers.gpu_app import GPUWorkerApp
from workers.health import ComfyUIHealth
from workers.intake import IntakeStep
from workers.metrics import MetricsServer
from workers.reaper import Reaper
from workers.slots import SlotsStep
from workers.webhooks import WebhookStep


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--gpu", type=int, help="GPU index; names the worker gpuN@host (default: GPU_INDEX)")
    parser.add_argument("--comfyui", help="this GPU's ComfyUI URL (default: COMFYUI_URL; else entry N of "
                                          "COMFYUI_URLS; else http://127.0.0.1:<8188+N>)")
    parser.add_argument("--comfyui-dir", help="this GPU's ComfyUI folder, to delete each job's files there "
                                              "(default: COMFYUI_DIR; unset: they are left)")
    parser.add_argument("--hostname", help="host part of the worker name (default: WORKER_HOST)")
    parser.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port "
                                                         "(default: METRICS_PORT; unset: none)")
    parser.add_argument("--loglevel", help="default: LOG_LEVEL")
    return parser.parse_args(argv)


def worker_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the command line's options over them; the ComfyUI URL resolved."""
    options = {"gpu_index": args.gpu, "comfyui_url": args.comfyui, "comfyui_dir": args.comfyui_dir,
               "worker_host": args.hostname, "metrics_port": args.metrics_port,
               "log_level": args.loglevel}
    settings = Settings.from_env(**{name: value for name, value in options.items() if value is not None})
    try:
        return settings.replace(comfyui_url=settings.worker_comfyui_url())
    except ValueError as exc:
        raise SystemExit(str(exc))


def create_worker_app(settings: Settings) -> GPUWorkerApp:
    app = GPUWorkerApp(settings)
    app.steps["worker"].add(MetricsServer)
    app.steps["consumer"].add(ComfyUIHealth)
    app.steps["consumer"].add(CapabilitiesStep)
    app.steps["consumer"].add(Reaper)
    app.steps["consumer"].add(IntakeStep)
    app.steps["consumer"].add(SlotsStep)
    app.steps["consumer"].add(WebhookStep)
    app.conf.worker_pool = "workers.pool:GPUThreadPool"  # threads, cancelled on terminate (workers/pool.py)
    # Sent once a warm shutdown has let the jobs in hand end: their clean-up is done before the process exits.
    worker_shutdown.connect(lambda **_: app.cleaner.flush(), weak=False)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = worker_settings(parse_args(argv))
    app = create_worker_app(settings)
    # One pool thread runs the job on the GPU; with pipelining a second one holds the next job, whose prompt
    # waits in ComfyUI's queue (workers/slots.py asks for it only near the end of the current job).
    threads = 2 if settings.pipeline_lookahead > 0 else 1
    name = settings.worker_name
    app.worker_main(["worker", "--hostname", name,
                     "--concurrency", str(threads), "--queues", worker_queue(name),
                     "--loglevel", settings.log_level, "--task-events",
                     # Workers share nothing with each other (all state is in Redis): listening to every other
                     # worker's events (gossip) and syncing revokes at start-up (mingle) only costs CPU and Redis
                     # traffic that grows with the square of the number of GPUs.
                     "--without-gossip", "--without-mingle"])


if __name__ == "__main__":
    main()
