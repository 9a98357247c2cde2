"""Benchmark scripts that print figures (``python -m bench.perf.<name>``); never run by tests."""
