"""What every tier shares: the Celery app, job requests, status, outputs, cancellation, the Python client."""
