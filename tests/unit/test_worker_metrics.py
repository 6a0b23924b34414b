"""The GPU worker's metrics helpers: the GPU's busy clock, and the kinds of ComfyUI errors."""
from __future__ import annotations

import time

import pytest

from workers.comfyui import ComfyUIHTTPError, ComfyUIProtocolError, ComfyUIUnavailable, PromptLost, PromptRejected
from workers.metrics import BusyClock, comfyui_error_kind
from workers.runner import ComfyUIStuck, JobCancelled, JobFailed


def test_busy_clock_counts_overlapping_prompts_once_and_the_running_one_too():
    clock = BusyClock()
    assert clock.seconds() == 0
    clock.start()
    clock.start()  # a second prompt before the first ended: the GPU is busy once, not twice
    time.sleep(0.05)
    running = clock.seconds()
    assert running >= 0.05
    clock.stop()
    clock.stop()
    ended = clock.seconds()
    assert running <= ended < running + 0.05
    time.sleep(0.05)
    assert clock.seconds() == ended  # idle time is not busy time


@pytest.mark.parametrize("exc, kind", [
    (ComfyUIUnavailable("http://gpu", "refused"), "unreachable"),
    (PromptLost("http://gpu", "gone"), "prompt_lost"),
    (PromptRejected("http://gpu", 400, {"error": {"type": "prompt_outputs_failed_validation"}}), "rejected"),
    (ComfyUIProtocolError("http://gpu", "not JSON"), "protocol"),
    (ComfyUIHTTPError("http://gpu", 500, "boom"), "http"),
    (JobFailed("node 3 raised", comfyui_error="execution_error"), "execution_error"),
    (ComfyUIStuck("did not stop", {}, cancelled=False), "stuck"),
    (JobFailed("timed out after 600 s on the GPU"), None),
    (JobCancelled("job"), None),
])
def test_comfyui_error_kinds(exc, kind):
    assert comfyui_error_kind(exc) == kind
