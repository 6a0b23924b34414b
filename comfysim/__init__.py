"""comfysim: a ComfyUI-compatible server for development, tests and benchmarks; it needs no GPU."""
