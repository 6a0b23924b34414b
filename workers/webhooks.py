"""The webhook sender: a thread in every GPU worker (and in the reaper process) that delivers the outbox's
deliveries (app/webhooks.py). It is never on a job's path: a slow receiver delays other webhooks, not the next
prompt, and the web process never sends."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis
import requests

from app.celery_app import Text2ImgCelery
from app.webhooks import Delivery, WebhookRefused, check_url, sign
from workers.thread_step import ThreadStep

log = logging.getLogger("workers.webhooks")

TIMEOUT = 10.0  # seconds a receiver has to answer


class Sender:
    def __init__(self, app: Text2ImgCelery, name: str):
        self.app = app
        self.name = name
        self.session = requests.Session()

    def run(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                self.app.webhooks.ensure_group()
                for entry_id, delivery in self.app.webhooks.take(self.name):
                    self.send(entry_id, delivery)
            except (redis.RedisError, OSError) as exc:
                log.warning("%s: webhook sender: %s", self.name, exc)
                stopped.wait(1.0)
            except Exception:  # the sender must outlive any one bad delivery
                log.exception("%s: webhook sender failed; going on", self.name)
                stopped.wait(1.0)

    def send(self, entry_id: bytes, delivery: Delivery) -> None:
        settings = self.app.settings
        body = json.dumps(self.body(delivery), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "text2img-queue webhooks",
                   "X-Webhook-Id": delivery.delivery_id, "X-Webhook-Timestamp": timestamp,
                   "X-Webhook-Signature": sign(settings.webhook_secret, timestamp, body)}
        try:
            check_url(delivery.url, settings.webhook_allow_private)  # again: where its name points may have changed
            response = self.session.post(delivery.url, data=body, headers=headers, timeout=TIMEOUT,
                                         allow_redirects=False)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except (requests.RequestException, WebhookRefused) as exc:
            error = str(exc) or type(exc).__name__
        if error is None:
            self.app.webhooks.delivered(entry_id)
            log.info("job %s: webhook %s delivered to %s (attempt %d)", delivery.job_id, delivery.delivery_id,
                     delivery.url, delivery.attempt + 1)
            return
        outcome = self.app.webhooks.failed(entry_id, delivery, error)
        log.warning("job %s: webhook %s to %s failed (attempt %d: %s); %s", delivery.job_id, delivery.delivery_id,
                    delivery.url, delivery.attempt + 1, error,
                    "it is a dead letter now" if outcome == "dead" else "it will be tried again")

    def body(self, delivery: Delivery) -> dict[str, Any]:
        """The job's public status (as GET /api/jobs/<id> answers); its id and end state if it has expired."""
        status = self.app.statuses.job_status(delivery.job_id)
        return status or {"id": delivery.job_id, "state": delivery.state}


def send_forever(app: Text2ImgCelery, name: str, stopped: threading.Event) -> None:
    Sender(app, name).run(stopped)


class WebhookStep(ThreadStep):
    """Consumer bootstep: the worker's webhook sender thread."""

    thread_name = "webhooks"

    def loop(self, app: Any, name: str, stopped: threading.Event) -> None:
        send_forever(app, name, stopped)
