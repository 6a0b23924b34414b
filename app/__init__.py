"""The shared core, used by every tier (web, workers, the Python client): settings, the Celery app, the job
request, what Redis holds about jobs (records, leases, guarded state writes, outputs, inputs, previews), the
status model, submitting and cancelling, the Python client and the `text2img` command."""
