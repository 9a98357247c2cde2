"""Local executor vs Ray with 2 single-threaded workers on the same grid, one run, one machine.

The grid (≥ 8 cells) is run with --rerun semantics on every side. Three timings, alternated:
the local executor with all of torch's intra-op threads (the default), the local executor with
one thread (a sequential process: what Ray's workers each are), and Ray with ``--workers``
single-threaded workers. Ray's start-up is timed separately. On a machine whose cores torch's
intra-op threads already keep busy, Ray cannot beat the default local run by much; its gain is
cells in parallel where intra-op threading scales poorly, and more machines.

    python -m tools.ray_speedup [--limit 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.api import Config, LocalExecutor, RayExecutor, Runner


def timed(cfg: Config, executor) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    with Runner(cfg, [Path(sys.executable).name, "-m", "tools.ray_speedup", *sys.argv[1:]]) as runner:
        records = runner.run(executor)
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
        cfg = Config(
            defenses=["none", "examples.gaussian_blur:GaussianBlur"],
            attack=["fgsm", "pgd"],
            eps=[0.05, 0.1, 0.2, 0.3],
            limit=a.limit,
            device="cpu",
            data_root=a.data_root,
            cache_dir=a.cache_dir,
            results_dir=tmp,
            rerun=True,
            offline=True,
        )
        ray_exec = RayExecutor(num_cpus=a.workers)
        t0 = time.perf_counter()
        ray_exec.start()
        start_s = time.perf_counter() - t0
        timed(cfg, LocalExecutor())  # warm caches (data, classifier) for both
        timed(cfg, ray_exec)  # warm Ray workers
        threads = torch.get_num_threads()
        local, single, remote = [], [], []
        for _ in range(a.repeats):
            t, lrec = timed(cfg, LocalExecutor())
            local.append(t)
            torch.set_num_threads(1)
            t, srec = timed(cfg, LocalExecutor())
            single.append(t)
            torch.set_num_threads(threads)
            t, rrec = timed(cfg, ray_exec)
            remote.append(t)
        key = lambda recs: sorted((r["defense"], r["attack"], r["eps"], r["defended_adv_acc"]) for r in recs)
        same = key(lrec) == key(rrec) == key(srec)
    cells = sum(r.kind == "cell" for r in lrec)
    lm, sm, rm = (statistics.median(v) for v in (local, single, remote))
    show = lambda v: ", ".join(f"{t:.2f}" for t in v)
    print(f"grid: {cells} cells (+ worst-case rows), {a.limit} images, cpu, {os.cpu_count()} cores")
    print(f"ray start-up (not in the figures below): {start_s:.1f} s")
    print(f"local executor, {threads} torch threads  median {lm:.2f} s ({show(local)})")
    print(f"local executor, 1 torch thread    median {sm:.2f} s ({show(single)})")
    print(f"ray, {a.workers} workers × 1 thread     median {rm:.2f} s ({show(remote)})")
    print(f"intra-op scaling (1 thread / {threads} threads) = {sm / lm:.2f}×")
    print(
        f"speed-up vs local {threads} threads = {lm / rm:.2f}×   vs local 1 thread = {sm / rm:.2f}×   "
        f"identical accuracies: {same}"
    )


if __name__ == "__main__":
    main()
