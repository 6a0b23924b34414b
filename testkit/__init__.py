"""Support for the tests (tests/) and the benchmarks (bench/), kept out of both so that neither imports the
other: launchers that start the system's parts as real processes on free 127.0.0.1 ports (Redis, ComfyUI
simulators, GPU workers, the reaper, Flower, the web tier under gunicorn or in a thread; `services`, on the
child-process base in `processes`), the one waiting helper (`waiting`: poll a condition until it holds), helpers
that follow jobs through the system (`jobs`), the recordings of a real ComfyUI and their loader (`recordings`),
test images (`images`) and the repository's paths (`paths`)."""
