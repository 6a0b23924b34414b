"""The Celery task `text2img.generate`, thin: the work is in workers/ and app/."""
