"""Finding jobs whose worker died, and handing them back in seconds.

An execution lists its job in `t2i:running` with the broker delivery that carries it, and keeps the job's lease
alive (app/leases.py). Every worker runs this reaper; every REAPER_INTERVAL seconds one of them (whichever takes
the Redis lock for that turn) looks for listed jobs whose lease has expired. For each, in one transaction that
fails if anything changed meanwhile (the lease was taken, the job listed again):
- the job's status becomes PROGRESS with phase `recovering` and a message naming the lost worker;
- kombu's unacknowledged copy of its message is deleted: the dead execution's late acknowledgement (a frozen
  worker that wakes up) then removes nothing, and kombu never restores that copy;
- the job leaves `t2i:running` and goes back to its old place in the ready index, or straight to a waiting GPU
  that can run it (app/dispatch.py).

A live worker takes the job at once; it re-attaches to the prompt on the ComfyUI that has it, or collects it from
the history, or submits it if that ComfyUI lost it (see workers/runner.py).

The same turn hands back the jobs of workers whose heartbeat has gone stale: those waiting in their own queue,
and those handed to them that never started (a job they started has a lease, and comes back when it expires)."""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import redis
from kombu.exceptions import OperationalError

from app.celery_app import Text2ImgCelery, create_celery
from app.counters import LEASE_RECOVERED, count
from app.intake import take_in_forever
from app.leases import RUNNING, Holder, holders, lease_key
from app.settings import Settings
from workers.thread_step import ThreadStep
from workers.webhooks import send_forever

log = logging.getLogger("workers.reaper")

LOCK = "t2i:reaper"


def resume_lost_jobs(app: Text2ImgCelery, channel: Any, reaper: str) -> list[str]:
    """One reaper turn: hand back every listed job whose lease expired, and the jobs of lost workers; returns
    the ids of the jobs whose lease expired."""
    resumed = []
    for job_id, holder in holders(app.redis).items():
        if app.redis.exists(lease_key(job_id)):
            continue
        if _hand_back(app, channel, job_id, holder):
            log.warning("job %s: worker %s stopped renewing its lease; handed back to the queue (reaper %s)",
                        job_id, holder.worker, reaper)
            resumed.append(job_id)
    hand_back_from_lost_workers(app, reaper)
    return resumed


def hand_back_from_lost_workers(app: Text2ImgCelery, reaper: str) -> None:
    online = app.fleet.fresh()
    for worker in app.dispatcher.dispatched_to():
        if worker in online:
            continue
        handed = app.dispatcher.reclaim(worker) + app.dispatcher.stray(worker, held=set())
        if handed:
            log.warning("worker %s is gone: handed back %s (reaper %s)", worker, ", ".join(handed), reaper)
        if not app.dispatcher.assigned(worker):
            app.dispatcher.forget_worker(worker)


def _hand_back(app: Text2ImgCelery, channel: Any, job_id: str, holder: Holder) -> bool:
    status = _recovering_status(app, job_id, holder)

    def transaction(pipe: Any) -> bool:
        listed = pipe.hget(RUNNING, job_id)
        if pipe.exists(lease_key(job_id)) or listed is None or Holder.parse(listed) != holder:
            return False
        pipe.multi()
        pipe.hdel(RUNNING, job_id)
        app.backend.write(job_id, "PROGRESS", status, pipe=pipe)
        pipe.zrem(channel.unacked_index_key, holder.delivery_tag)
        pipe.hdel(channel.unacked_key, holder.delivery_tag)
        app.dispatcher.hand_back(job_id, holder.worker, pipe=pipe)
        count(pipe, LEASE_RECOVERED)
        return True

    return bool(channel.client.transaction(transaction, RUNNING, lease_key(job_id), value_from_callable=True))


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


class Reaper(ThreadStep):
    """Consumer bootstep: every GPU worker runs the reaper in a thread of its own."""

    thread_name = "reaper"

    def loop(self, app: Any, name: str, stopped: threading.Event) -> None:
        reap_forever(app, name, stopped)


def main() -> None:
    """`python -m workers.reaper`: the reaper alone (the Procfile runs one), so that the jobs of a fleet whose every
    GPU worker is down still show that they are recovering (and jobs sent by task name are still taken in, and
    webhooks still sent)."""
    settings = Settings.from_env()
    stopped = threading.Event()
    # SIGTERM (a container's stop, honcho's Ctrl-C) ends the turn in progress, then the process.
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = f"reaper@{settings.worker_host}"
    log.info("%s: handing back jobs whose lease expired, every %g s", name, settings.reaper_interval)
    app = create_celery(settings)
    threading.Thread(target=take_in_forever, name="intake", daemon=True, args=(app.intake, name, stopped)).start()
    threading.Thread(target=send_forever, name="webhooks", daemon=True, args=(app, name, stopped)).start()
    reap_forever(app, name, stopped)
    log.info("%s: stopped", name)


if __name__ == "__main__":
    main()
