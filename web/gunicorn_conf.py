"""gunicorn's settings for the web tier (`gunicorn --config python:web.gunicorn_conf "web:create_app()"`), from
the same Settings as everything else."""
from app.settings import Settings

_settings = Settings.from_env()
bind = f"{_settings.web_host}:{_settings.web_port}"
workers = _settings.web_workers
threads = _settings.web_threads
accesslog = "-"
