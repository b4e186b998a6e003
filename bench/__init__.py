"""Benchmarks: each module runs alone (`python -m bench.bench_NAME`) and exposes `run(quick=False) -> dict`."""
