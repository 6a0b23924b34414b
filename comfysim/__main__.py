"""python -m comfysim [--port 8188] [--step-seconds 0.05] ...: run one simulated ComfyUI."""
from __future__ import annotations

import logging
import os
import signal
import sys

from aiohttp import web

from comfysim.server import create_app
from comfysim.settings import parse_settings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    url = f"http://{settings.host}:{settings.port}"

    async def announce(app: web.Application) -> None:
        print(f"comfysim listening on {url} (data in {settings.data_dir})", flush=True)

    def exit_now(signum: int, frame: object) -> None:
        # A real ComfyUI stops without finishing its prompt or closing its websockets (no close frame).
        logging.getLogger("comfysim").info("signal %s: exiting", signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    app = create_app(settings)
    app.on_startup.append(announce)
    web.run_app(app, host=settings.host, port=int(settings.port), print=None, handle_signals=False)


if __name__ == "__main__":
    main(sys.argv[1:])
