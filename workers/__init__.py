"""GPU workers: the ComfyUI client, and (next) the job runner and the per-GPU Celery worker launcher."""
