"""Finding jobs whose worker died, and handing them back in seconds.

An execution lists its job in `t2i:running` with the broker delivery that carries it, and keeps the job's lease
alive (app/leases.py). Every worker runs this reaper; every REAPER_INTERVAL seconds one of them (whichever takes
the Redis lock for that turn) looks for listed jobs whose lease has expired. For each, in one transaction that
fails if anything changed meanwhile (the lease was taken, the delivery acknowledged):
- the job's status becomes PROGRESS with phase `recovering` and a message naming the lost worker;
- kombu's unacknowledged copy of the message moves from its `unacked` hash to the front of its queue, as kombu's
  own visibility-timeout restore would move it, but under a new delivery tag: the dead execution's late
  acknowledgement (a frozen worker that wakes up) then removes nothing, and its copy can never run again;
- the job leaves `t2i:running` (the execution that takes it next lists it again).

A live worker takes the job at once; it re-attaches to the prompt on the ComfyUI that has it, or collects it from
the history, or submits it if that ComfyUI lost it (see workers/runner.py). If the message is not in the
unacknowledged hash (already restored by the visibility timeout, or lost), the job is sent again from its record:
a second copy of a job is harmless, since the lease lets one execution run it and a copy of an ended job does
nothing."""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import redis
from celery import bootsteps
from kombu.exceptions import OperationalError

from app.celery_app import RECORDED_HEADER, TASK_NAME, Text2ImgCelery, create_celery
from app.leases import RUNNING, Holder, holders, lease_key
from app.settings import Settings

log = logging.getLogger("workers.reaper")

LOCK = "t2i:reaper"


def resume_lost_jobs(app: Text2ImgCelery, channel: Any, reaper: str) -> list[str]:
    """One reaper turn: hand back every listed job whose lease expired; returns their ids."""
    resumed = []
    for job_id, holder in holders(app.redis).items():
        if app.redis.exists(lease_key(job_id)):
            continue
        if _hand_back(app, channel, job_id, holder):
            log.warning("job %s: worker %s stopped renewing its lease; handed back to the queue (reaper %s)",
                        job_id, holder.worker, reaper)
            resumed.append(job_id)
    return resumed


def _hand_back(app: Text2ImgCelery, channel: Any, job_id: str, holder: Holder) -> bool:
    status = _recovering_status(app, job_id, holder)
    found: list[bool] = []

    def transaction(pipe: Any) -> bool:
        listed = pipe.hget(RUNNING, job_id)
        if pipe.exists(lease_key(job_id)) or listed is None or Holder.parse(listed) != holder:
            return False
        raw = pipe.hget(channel.unacked_key, holder.delivery_tag)
        pipe.multi()
        pipe.hdel(RUNNING, job_id)
        app.backend.write(job_id, "PROGRESS", status, pipe=pipe)
        if raw:
            _restore_under_new_tag(channel, holder.delivery_tag, raw, pipe)
        found.append(bool(raw))
        return True

    if not channel.client.transaction(transaction, RUNNING, lease_key(job_id), channel.unacked_key,
                                      value_from_callable=True):
        return False
    if not found[-1]:
        _send_again(app, job_id)
    return True


def _restore_under_new_tag(channel: Any, tag: str, raw: bytes, pipe: Any) -> None:
    payload, exchange, routing_key = json.loads(raw)
    payload["properties"]["delivery_tag"] = str(uuid.uuid4())
    pipe.zrem(channel.unacked_index_key, tag)
    pipe.hdel(channel.unacked_key, tag)
    channel._do_restore_message(payload, exchange, routing_key, pipe, leftmost=False)  # front of the queue


def _send_again(app: Text2ImgCelery, job_id: str) -> None:
    request = app.records.job(job_id).get("request")
    if not isinstance(request, dict):
        log.error("job %s: its message is gone and its record has no request; it cannot be resumed", job_id)
        return
    log.warning("job %s: its message was not among the unacknowledged ones; sending it again", job_id)
    app.send_task(TASK_NAME, kwargs=request, task_id=job_id, headers={RECORDED_HEADER: True})


def _recovering_status(app: Text2ImgCelery, job_id: str, holder: Holder) -> dict[str, Any]:
    last = app.statuses.backend_meta(job_id)
    previous = last.get("result") if last.get("status") == "PROGRESS" and isinstance(last.get("result"), dict) else {}
    lost_at = time.time() - app.settings.lease_ttl  # the lease was last renewed at most this long ago
    clock = time.strftime("%H:%M:%S", time.gmtime(lost_at))
    return {**previous, "phase": "recovering", "lost_at": lost_at, "updated_at": time.time(),
            "message": f"The GPU worker {holder.worker} stopped answering at {clock} UTC; "
                       f"the job will resume on the next free GPU"}


def reap_forever(app: Text2ImgCelery, name: str, stopped: threading.Event) -> None:
    """Every REAPER_INTERVAL seconds, if this process wins the turn's lock, one reaper turn."""
    interval = app.settings.reaper_interval
    while not stopped.wait(interval):
        try:
            # One reaper a turn across the fleet: the lock lives as long as the turn.
            if app.redis.set(LOCK, name, nx=True, px=int(interval * 1000)):
                with app.connection_for_write() as connection:
                    resume_lost_jobs(app, connection.default_channel, name)
        except (redis.RedisError, OSError, OperationalError) as exc:
            log.warning("%s: reaper turn failed: %s", name, exc)


class Reaper(bootsteps.StartStopStep):
    """Consumer bootstep: every GPU worker runs the reaper in a thread of its own."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()

    def start(self, consumer: Any) -> None:
        self.stopped = threading.Event()
        threading.Thread(target=reap_forever, name="reaper", daemon=True,
                         args=(consumer.app, consumer.hostname, self.stopped)).start()

    def stop(self, consumer: Any) -> None:
        self.stopped.set()


def main() -> None:
    """`python -m workers.reaper`: the reaper alone (the Procfile runs one), so that the jobs of a fleet whose every
    GPU worker is down still show that they are recovering."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = f"reaper@{settings.worker_host}"
    log.info("%s: handing back jobs whose lease expired, every %g s", name, settings.reaper_interval)
    reap_forever(create_celery(settings), name, threading.Event())


if __name__ == "__main__":
    main()
