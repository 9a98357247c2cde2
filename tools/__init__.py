"""Benchmark scripts that print figures (``python -m tools.<name>``); tests run the GPU script's CPU dry run (tests/test_gpu_script.py)."""
