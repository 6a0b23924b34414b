"""The `text2img` command (also `python -m app`): generate "a red fox" --steps 20 --out fox.png --wait | status ID
| cancel ID | workers. With --url it goes through a web tier instead of the shared Redis."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.client import Client, HttpClient, Job, JobError
from app.validation import RequestError
from app.status import progress_summary

BAR_WIDTH = 30


def progress_line(status: dict[str, Any]) -> str:
    state = status["state"]
    if state == "QUEUED":
        queue = status.get("queue") or {}
        return f"queued: position {queue.get('position')}, {queue.get('workers_online')} GPU worker(s) online"
    percent = float((status.get("progress") or {}).get("overall_percent") or 0)
    filled = int(BAR_WIDTH * percent / 100)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress_summary(status)}"


def show_progress(status: dict[str, Any]) -> None:
    sys.stderr.write("\r\033[K" + progress_line(status))
    sys.stderr.flush()


def output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{index + 1}{out.suffix}") for index in range(count)]


def generate(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {name: value for name, value in {
        "priority": args.priority, "client": args.client}.items() if value is not None}
    if args.workflow:
        fields["workflow"] = json.loads(Path(args.workflow).read_text(encoding="utf-8"))
    else:
        fields.update({name: value for name, value in {
            "template": args.template, "prompt": args.prompt, "negative_prompt": args.negative, "width": args.width,
            "height": args.height, "steps": args.steps, "seed": args.seed, "batch_size": args.batch_size}.items()
            if value is not None})
        fields.update(parse_param(item) for item in args.param)
    image = Path(args.image).read_bytes() if args.image else None
    new_job: Job = client(args).submit(image, **fields)
    print(new_job.id)
    if not (args.wait or args.out):
        return 0
    status = new_job.wait(timeout=args.timeout, on_progress=show_progress)
    sys.stderr.write("\n")
    if status["state"] != "SUCCESS":
        reason = (status.get("error") or {}).get("reason") or status.get("message")
        print(f"{status['state']}: {reason}", file=sys.stderr)
        return 1
    images = new_job.images()
    for path, data in zip(output_paths(Path(args.out or f"{new_job.id}.png"), len(images)), images):
        path.write_bytes(data)
        print(f"saved {path} (seed {status.get('seed')})", file=sys.stderr)
    return 0


def parse_param(item: str) -> tuple[str, Any]:
    """--param name=value: the value as JSON when it is JSON (numbers), else as text."""
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise SystemExit(f"--param {item!r}: use --param name=value")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def client(args: argparse.Namespace) -> Client | HttpClient:
    return HttpClient(args.url, args.token) if args.url else Client(redis_url=args.redis_url)


def find_job(args: argparse.Namespace) -> Job:
    return client(args).job(args.id)


def status_command(args: argparse.Namespace) -> int:
    print(json.dumps(find_job(args).status(), indent=2))
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    print(json.dumps(find_job(args).cancel(), indent=2))
    return 0


def workers_command(args: argparse.Namespace) -> int:
    workers = Client(redis_url=args.redis_url).workers()
    for worker in workers:
        health = "ready" if worker.get("healthy") else "ComfyUI down"
        print(f"{worker['name']:30} gpu {worker.get('gpu')}  {worker.get('comfyui_url')}  {health}")
        for folder, names in (worker.get("capabilities") or {}).items():
            print(f"    {folder}: {', '.join(names) if isinstance(names, list) else names}")
    if not workers:
        print("no GPU workers online")
    return 0


def webhooks_command(args: argparse.Namespace) -> int:
    outbox = Client(redis_url=args.redis_url).app.webhooks
    if args.replay:
        if not outbox.replay(args.replay):
            print(f"no failed webhook delivery {args.replay}", file=sys.stderr)
            return 1
        print(f"replayed {args.replay}")
        return 0
    letters = outbox.dead_letters()
    for letter in letters:
        print(f"{letter['delivery_id']}  {letter['url']}  {letter['attempt']} attempt(s), last: {letter['error']}")
    if not letters:
        print("no failed webhook deliveries")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="text2img", description="text2img-queue from the command line")
    root.add_argument("--url", help="go through this web tier (e.g. http://127.0.0.1:8000) instead of Redis")
    root.add_argument("--redis-url", help="the shared Redis (default: REDIS_URL)")
    root.add_argument("--token", help="API token for --url, when the server requires one")
    commands = root.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="queue a job")
    gen.add_argument("prompt", nargs="?", help="the prompt (for a template that takes one)")
    gen.add_argument("--template", help="the workflow template (default: the server's DEFAULT_TEMPLATE)")
    gen.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="any parameter of the template (repeat it); numbers are read as numbers")
    gen.add_argument("--workflow", help="a raw ComfyUI API-format workflow file (JSON) instead of a template")
    gen.add_argument("--priority", type=int, help="0-9 (default 5): a higher one starts before every lower one")
    gen.add_argument("--client", help="whose fair share the job counts against (with --url and a token: the token's)")
    gen.add_argument("--negative")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--batch-size", type=int)
    gen.add_argument("--image", help="input image, for a template that takes one (default template: DEFAULT_IMAGE_TEMPLATE)")
    gen.add_argument("--out", help="where to save the image (several: name-1.png, name-2.png, ...)")
    gen.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    gen.add_argument("--timeout", type=float, default=None)
    gen.set_defaults(run=generate)
    for name, run in (("status", status_command), ("cancel", cancel_command)):
        sub = commands.add_parser(name, help=f"{name} of a job")
        sub.add_argument("id")
        sub.set_defaults(run=run)
    commands.add_parser("workers", help="GPU workers online and their ComfyUI URLs").set_defaults(run=workers_command)
    hooks = commands.add_parser("webhooks", help="webhook deliveries that failed for WEBHOOK_RETRY_HOURS")
    hooks.add_argument("--replay", metavar="DELIVERY_ID", help="send this failed delivery again")
    hooks.set_defaults(run=webhooks_command)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except RequestError as exc:
        print(f"invalid request: {exc}", file=sys.stderr)
        return 2
    except (JobError, TimeoutError) as exc:
        print(str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
