"""/metrics under gunicorn with several processes (prometheus_client's multiprocess mode): whichever process
answers a scrape counts every process's requests."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from testkit.metrics import scrape, value
from testkit.services import GunicornWeb
from testkit.waiting import eventually


def test_every_scrape_counts_the_requests_of_every_process(settings, clean_redis, tmp_path: Path):
    web = GunicornWeb(settings, tmp_path, WEB_WORKERS="3").start()
    metrics_dir = Path(web.env["METRICS_DIR"])
    sent = 0

    def burst() -> bool:
        nonlocal sent
        with ThreadPoolExecutor(8) as pool:  # each on a connection of its own: the processes share them out
            answers = list(pool.map(lambda _: requests.get(web.url + "/healthz", timeout=10).status_code, range(24)))
        assert answers == [200] * 24
        sent += 24
        return len({path.name.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}) >= 2

    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    try:
        before = value(scrape(web.url + "/metrics"), "t2i_http_requests_total", **healthz)  # the start-up check's
        eventually(burst, 30, lambda: f"one process served all {sent} requests")
        for _ in range(6):  # scrapes land on different processes; each sees the same total
            assert value(scrape(web.url + "/metrics"), "t2i_http_requests_total", **healthz) == before + sent
    finally:
        web.stop()
