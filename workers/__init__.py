"""GPU workers: one Celery worker process per GPU, bound to that GPU's ComfyUI.

`__main__` launches one; `gpu_app` is its Celery app; `runner` is one job's life on ComfyUI; `comfyui/` the one
ComfyUI client; `progress` the one place progress is written; `health`, `slots`, `intake`, `reaper` and `eventloop` its
consumer steps (ComfyUI checks, asking for jobs with prompt pipelining, taking jobs in, handing back lost jobs);
`pool` its thread pool."""
