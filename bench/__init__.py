"""Benchmarks: `bench/run` prints one table of every figure with its target and limit (see README)."""
