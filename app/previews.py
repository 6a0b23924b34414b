"""The latest preview frame of a running job, kept briefly in Redis."""
from __future__ import annotations

from app.celery_app import celery, redis_client


def save_preview(job_id: str, content_type: str, data: bytes) -> None:
    pipe = redis_client().pipeline(transaction=True)
    pipe.hset(f"t2i:preview:{job_id}", mapping={"content_type": content_type, "data": data})
    pipe.expire(f"t2i:preview:{job_id}", int(celery.conf.text2img_preview_ttl))
    pipe.execute()


def latest_preview(job_id: str) -> tuple[str, bytes] | None:
    raw = redis_client().hgetall(f"t2i:preview:{job_id}")
    if not raw:
        return None
    return raw[b"content_type"].decode(), raw[b"data"]
