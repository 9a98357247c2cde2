"""Local executor vs Ray with 2 single-threaded workers on the same grid, one run, one machine.

The grid (≥ 8 cells) is run with --rerun semantics on both sides; the local executor uses all
of torch's intra-op threads, each Ray task one thread. Ray's start-up is timed separately.

    python -m bench.perf.ray_speedup [--limit 300] [--repeats 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.config import Config
from bench.executors import RayExecutor
from bench.runner import LocalExecutor, Runner


def timed(cfg: Config, executor) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    records = Runner(cfg, ["perf-ray"]).run(executor)
    return time.perf_counter() - t0, records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-root", default="data")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "defense-bench"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(defenses=["none", "examples.median_filter:MedianFilter"], attack=["fgsm", "pgd"],
                     eps=[0.05, 0.1, 0.2, 0.3], limit=a.limit, device="cpu", data_root=a.data_root,
                     cache_dir=a.cache_dir, results_dir=tmp, rerun=True, offline=True)
        ray_exec = RayExecutor(num_cpus=a.workers)
        t0 = time.perf_counter()
        ray_exec.start()
        start_s = time.perf_counter() - t0
        timed(cfg, LocalExecutor())  # warm caches (data, classifier) for both
        timed(cfg, ray_exec)         # warm Ray workers
        local, remote = [], []
        for _ in range(a.repeats):
            t, lrec = timed(cfg, LocalExecutor())
            local.append(t)
            t, rrec = timed(cfg, ray_exec)
            remote.append(t)
        same = sorted((r["defense"], r["attack"], r["eps"], r["defended_adv_acc"]) for r in lrec) == \
            sorted((r["defense"], r["attack"], r["eps"], r["defended_adv_acc"]) for r in rrec)
    cells = sum(r["attack"] != "worst" for r in lrec)
    lm, rm = statistics.median(local), statistics.median(remote)
    print(f"grid: {cells} cells (+ worst-case rows), {a.limit} images, cpu, torch threads {torch.get_num_threads()}")
    print(f"ray start-up (not in the figures below): {start_s:.1f} s")
    print(f"local executor  median {lm:.2f} s ({', '.join(f'{t:.2f}' for t in local)})")
    print(f"ray, {a.workers} workers median {rm:.2f} s ({', '.join(f'{t:.2f}' for t in remote)})")
    print(f"speed-up local/ray = {lm / rm:.2f}×   identical accuracies: {same}")


if __name__ == "__main__":
    main()
