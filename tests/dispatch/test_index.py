"""The ready index and its scripts (app/dispatch.py) on a real Redis, with workers played by the test: the order
(priority, fair share, arrival), exact positions, routing by what each GPU offers, the same checkpoint preferred,
jobs handed back in their old place, and a worker's queue given back."""
from __future__ import annotations

import json
import time

import pytest

from app.capabilities import Capabilities
from app.celery_app import create_celery
from testkit.jobs import Jobs
from comfysim.catalogue import NODES, OPTIONAL_NODES, combo_lists

SMALL = {"width": 64, "height": 64, "steps": 2}


def gpu(core, name: str, checkpoints: list[str], extra_nodes: tuple[str, ...] = ()) -> str:
    """A worker that is online, healthy, and has published what its ComfyUI offers."""
    info = {node: spec.object_info(combo_lists(checkpoints, [])) for node, spec in NODES.items()
            if node not in OPTIONAL_NODES or node in extra_nodes}
    core.fleet.heartbeat(name, {"gpu": 0, "comfyui_url": "http://x", "healthy": True}, True, 60)
    core.fleet.publish_capabilities(name, Capabilities.from_object_info(info), 60)
    return name


def handed(core, worker: str) -> list[str]:
    """The jobs in the worker's own queue, oldest first."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(core.redis.lrange(f"t2i.gpu.{worker}", 0, -1))]


def submit(jobs, prompt: str, **fields) -> str:
    return jobs.submit({"prompt": prompt, **SMALL, **fields})[0]


def position(jobs, job_id: str) -> int | None:
    return jobs.status(job_id)["queue"]["position"]


def test_priority_first_then_fair_share_then_arrival_with_exact_positions(jobs):
    alice = [submit(jobs, f"a{n}", client="alice") for n in range(4)]
    bob = submit(jobs, "b", client="bob")
    urgent = submit(jobs, "u", client="alice", priority=9)
    low = submit(jobs, "l", client="carol", priority=0)
    expected = [urgent, alice[0], bob, alice[1], alice[2], alice[3], low]
    assert [position(jobs, job_id) for job_id in expected] == list(range(1, 8))
    worker = gpu(jobs.core, "gpu0@t", ["v1-5-pruned-emaonly.safetensors"])
    for job_id in expected:
        assert jobs.core.dispatcher.pull(worker, 1) == job_id
        jobs.core.dispatcher.release(worker, job_id)
    assert handed(jobs.core, worker) == expected and jobs.core.dispatcher.length() == 0


def test_a_clients_fair_share_starts_from_the_clock_not_from_its_past(jobs):
    """A client that was idle gets no credit for it: its jobs start from the clock (the start of the job handed
    last), then take turns with the busy client's."""
    worker = gpu(jobs.core, "gpu0@t", ["v1-5-pruned-emaonly.safetensors"])
    alice = [submit(jobs, f"a{n}", client="alice") for n in range(6)]
    for _ in range(3):
        jobs.core.dispatcher.release(worker, jobs.core.dispatcher.pull(worker, 1))
    bob = [submit(jobs, f"b{n}", client="bob") for n in range(2)]
    assert [position(jobs, job_id) for job_id in (bob[0], alice[3], bob[1], alice[4], alice[5])] == [1, 2, 3, 4, 5]


def test_each_job_goes_only_to_a_gpu_that_offers_what_it_needs(settings, clean_redis):
    core = create_celery(settings)  # its own view of the GPUs: none known when the jobs are submitted
    jobs = Jobs(core)
    first_sdxl = submit(jobs, "x", checkpoint="sdxl.safetensors")
    first_sd15 = submit(jobs, "y", checkpoint="sd15.safetensors")
    flux = submit(jobs, "z", checkpoint="flux.safetensors")  # accepted: no GPU had said what it offers yet
    sd15 = gpu(core, "gpu0@t", ["sd15.safetensors"])
    sdxl = gpu(core, "gpu1@t", ["sdxl.safetensors"], extra_nodes=("ImageSharpen",))
    assert core.dispatcher.pull(sd15, 1) == first_sd15, "the first job sd15's GPU can run, not the first in line"
    assert core.dispatcher.pull(sdxl, 1) == first_sdxl
    core.dispatcher.release(sd15, first_sd15)
    assert core.dispatcher.pull(sd15, 1) is None and position(jobs, flux) == 1
    status = jobs.status(flux)
    assert status["queue"]["capable_workers"] == 0
    assert status["message"] == "Waiting for a GPU that has what this job needs (none online does)"
    core.close()


def test_a_waiting_gpu_gets_a_new_job_at_once_preferring_one_idle_with_the_same_checkpoint(jobs):
    core = jobs.core
    workers = [gpu(core, f"gpu{n}@t", ["sd15.safetensors", "sdxl.safetensors"]) for n in range(3)]
    for worker in workers:
        assert core.dispatcher.pull(worker, 1) is None  # nothing queued: each waits, gpu0 longest
        time.sleep(0.01)
    first = submit(jobs, "a", checkpoint="sdxl.safetensors")
    assert handed(core, workers[0]) == [first], "the GPU idle longest"
    core.dispatcher.pull(workers[0], 1, ended=first)  # done: waits again, sdxl loaded
    pipelining = core.dispatcher.pull(workers[1], 2)  # gpu1 now has a pipelining slot only
    assert pipelining is None
    second = submit(jobs, "b", checkpoint="sdxl.safetensors")
    assert handed(core, workers[0]) == [first, second], "idle with the same checkpoint, over idle longer"
    third = submit(jobs, "c", checkpoint="sd15.safetensors")
    assert handed(core, workers[2]) == [third], "an idle GPU before a pipelining one"
    fourth = submit(jobs, "d", checkpoint="sd15.safetensors")
    assert handed(core, workers[1]) == [fourth], "a pipelining slot when no GPU is idle"
    assert core.dispatcher.length() == 0


def test_a_job_handed_back_takes_its_old_place(jobs):
    core = jobs.core
    worker = gpu(core, "gpu0@t", ["v1-5-pruned-emaonly.safetensors"])
    first, second, third = (submit(jobs, name) for name in ("1", "2", "3"))
    assert core.dispatcher.pull(worker, 1) == first
    assert core.dispatcher.hand_back(first, worker) == b"queued"
    assert [position(jobs, job_id) for job_id in (first, second, third)] == [1, 2, 3]
    assert core.dispatcher.assigned(worker) == set()
    assert core.dispatcher.hand_back(first, worker) == b"settled", "queued already: not twice"


def test_a_worker_that_stops_gives_back_the_jobs_in_its_queue(jobs):
    core = jobs.core
    worker = gpu(core, "gpu0@t", ["v1-5-pruned-emaonly.safetensors"])
    first, second = submit(jobs, "1"), submit(jobs, "2")
    assert core.dispatcher.pull(worker, 2) == first and core.dispatcher.pull(worker, 2) == second
    jobs.cancel(second)
    assert core.dispatcher.reclaim(worker) == [first], "the cancelled one is dropped"
    assert position(jobs, first) == 1 and handed(core, worker) == []
    assert core.dispatcher.stray(worker, held=set()) == [], "the cancelled one is let go too"
    assert core.dispatcher.assigned(worker) == set()


@pytest.mark.parametrize("priority", [-1, 10, "9", 5.5])
def test_priority_is_a_whole_number_from_0_to_9(jobs, priority):
    from app.validation import RequestError
    with pytest.raises(RequestError) as refused:
        submit(jobs, "x", priority=priority)
    assert refused.value.errors[0]["field"] == "priority"


def test_a_job_whose_record_expired_while_queued_is_dropped_not_handed(jobs):
    core = jobs.core
    worker = gpu(core, "gpu0@t", ["v1-5-pruned-emaonly.safetensors"])
    expired, kept = submit(jobs, "1"), submit(jobs, "2")
    core.redis.delete(f"t2i:job:{expired}")  # as RESULT_EXPIRES would, had it waited that long
    assert core.dispatcher.pull(worker, 1) == kept
    assert core.dispatcher.length() == 0 and handed(core, worker) == [kept]


def test_a_countdown_is_dropped_at_intake_so_that_no_slot_waits_on_a_timer(jobs):
    from app.celery_app import TASK_NAME
    sent = jobs.core.send_task(TASK_NAME, kwargs={"prompt": "later", **SMALL}, countdown=600)
    head = jobs.core.redis.hget(f"t2i:job:{sent.id}", "message_head").decode()
    assert json.loads(head + "}")["headers"]["eta"] is None
    assert position(jobs, sent.id) == 1


@pytest.mark.parametrize("garbage", [b"not json", b'{"headers": {}}', b'{"headers": [], "body": "", "properties": {}}',
                                     b'{"headers": {"id": "x"}, "body": "e30=", "properties": "base64"}'])
def test_a_message_that_is_not_a_task_is_dropped_and_the_ones_behind_it_are_taken_in(jobs, garbage):
    from app.celery_app import TASK_NAME
    queue = jobs.core.settings.queue_name
    jobs.core.redis.lpush(queue, garbage)
    sent = jobs.core.send_task(TASK_NAME, kwargs={"prompt": "behind it", **SMALL})
    assert jobs.core.redis.llen(queue) == 0 and position(jobs, sent.id) == 1
