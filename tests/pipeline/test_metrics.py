"""A GPU worker's /metrics (METRICS_PORT), scraped over HTTP after real jobs on a simulator: what ran on its GPU,
how long, its ComfyUI errors and websocket reconnects."""
from __future__ import annotations

from testkit.metrics import scrape, value
from testkit.processes import free_port
from testkit.waiting import eventually

JOB = {"prompt": "metrics", "width": 64, "height": 64, "steps": 10}


def test_worker_metrics_count_what_ran_on_its_gpu(start_simulator, start_worker, jobs):
    sim = start_simulator(step_seconds=0.03)
    port = free_port()
    worker = start_worker(sim, METRICS_PORT=port)
    url = f"http://127.0.0.1:{port}/metrics"
    mine = {"worker": worker.name}

    done, _ = jobs.submit(JOB)
    assert jobs.wait_terminal(done)["state"] == "SUCCESS"
    sim.set(fail_node="KSampler")
    failed, _ = jobs.submit(JOB)
    assert jobs.wait_terminal(failed)["state"] == "FAILURE"

    samples = scrape(url)
    assert value(samples, "t2i_job_queued_seconds_count", template="txt2img", **mine) == 2
    assert value(samples, "t2i_job_gpu_seconds_count", template="txt2img", **mine) == 2
    assert value(samples, "t2i_job_completion_seconds_count", **mine) == 1
    assert value(samples, "t2i_comfyui_errors_total", kind="execution_error", **mine) == 1
    assert value(samples, "t2i_comfyui_errors_total", **mine) == 1
    on_gpu = value(samples, "t2i_job_gpu_seconds_sum", **mine)
    assert on_gpu >= 10 * 0.03 * 0.8  # the success ran 10 steps of 0.03 s; the failure stopped as KSampler began
    # Busy seconds are the GPU time of the prompts (no overlap on one GPU), counted by their own clock.
    assert abs(value(samples, "t2i_gpu_busy_seconds_total", **mine) - on_gpu) < 0.25

    sim.set(fail_node="", drop_ws_after=4)
    reconnected, _ = jobs.submit(JOB)
    assert jobs.wait_terminal(reconnected)["state"] == "SUCCESS"
    # the worker counts a completion once its task has stored it, a moment after a poll may see SUCCESS
    samples = eventually(lambda: completions(scrape(url), 2, mine))
    assert value(samples, "t2i_comfyui_websocket_reconnects_total", **mine) >= 1
    assert value(samples, "t2i_job_completion_seconds_count", **mine) == 2


def completions(samples: dict, count: int, labels: dict[str, str]) -> dict | None:
    """The samples, once they count `count` completions."""
    return samples if value(samples, "t2i_job_completion_seconds_count", **labels) == count else None
