"""Harness overhead: the runner on a no-defense FGSM grid vs a bare torchattacks loop.

Both sides do the same work from the same starting point (dataset load, cached classifier
load, clean predictions once, then FGSM + predictions per eps), alternate ``--repeats`` times
in one process, and the medians are compared. Goal: ratio ≤ 1.10.

    python -m tools.harness --limit 1000 --eps 0.1,0.2,0.3 [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchattacks

from bench.api import DATASETS, Config, Runner, check_recipe, device_name, get_classifier, resolve_device


def harness(cfg: Config) -> float:
    t0 = time.perf_counter()
    with Runner(cfg, [Path(sys.executable).name, "-m", "tools.harness", *sys.argv[1:]]) as runner:
        runner.run()
    return time.perf_counter() - t0


def bare(cfg: Config) -> float:
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    spec = DATASETS.get(cfg.dataset[0])()
    data = spec.load(Path(cfg.data_root), cfg.offline)
    model, _ = get_classifier(
        spec.default_classifier, spec, data, check_recipe(cfg.classifier_recipe), cfg.seed, device, Path(cfg.cache_dir)
    )
    x, y = data.test.x[: cfg.limit], data.test.y[: cfg.limit]
    bs = cfg.batch_size
    with torch.no_grad():
        clean = sum(
            (model(x[i : i + bs].to(device)).argmax(1).cpu() == y[i : i + bs]).sum().item()
            for i in range(0, len(x), bs)
        )
    for eps in cfg.eps:
        atk = torchattacks.FGSM(model, eps=eps)
        correct = 0
        for i in range(0, len(x), bs):
            xb, yb = x[i : i + bs].to(device), y[i : i + bs].to(device)
            adv = atk(xb, yb)
            with torch.no_grad():
                correct += (model(adv).argmax(1) == yb).sum().item()
    assert clean >= 0 and correct >= 0
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--eps", default="0.1,0.2,0.3")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "defense-bench"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(
            defenses=["none"],
            attack=["fgsm"],
            eps=[float(e) for e in a.eps.split(",")],
            limit=a.limit,
            batch_size=a.batch_size,
            device=a.device,
            data_root=a.data_root,
            cache_dir=a.cache_dir,
            results_dir=tmp,
            rerun=True,
            offline=True,
        )
        harness(cfg), bare(cfg)  # warm caches (classifier training, page cache) on both paths
        h, b = [], []
        for _ in range(a.repeats):
            h.append(harness(cfg))
            b.append(bare(cfg))
    hm, bm = statistics.median(h), statistics.median(b)
    print(f"device: {device_name(resolve_device(a.device))}")
    print(f"grid: none × fgsm × eps {a.eps}, {a.limit} images, batch {a.batch_size}, {a.repeats} repeats")
    print(f"harness  median {hm:.3f} s  (all: {', '.join(f'{t:.3f}' for t in h)})")
    print(f"bare     median {bm:.3f} s  (all: {', '.join(f'{t:.3f}' for t in b)})")
    print(f"ratio harness/bare = {hm / bm:.3f}  (goal ≤ 1.10)")


if __name__ == "__main__":
    main()
