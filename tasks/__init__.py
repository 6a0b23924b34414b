"""Celery task definitions. Thin: the work is in workers/ and app/."""
