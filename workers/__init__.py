"""GPU workers: one Celery worker process per GPU, bound to that GPU's ComfyUI.

`__main__` launches one; `gpu_app` is its Celery app; `runner` is one job's life on ComfyUI; `comfyui/` the one
ComfyUI client; `progress` the one place progress is written; `health`, `pipeline`, `reaper` and `eventloop` its
consumer steps (ComfyUI checks and the job intake gate, prompt pipelining, handing back lost jobs); `pool` its
thread pool."""
