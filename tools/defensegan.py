"""DefenseGAN cost: the defense vs the algorithm's floor, and an (L, R) accuracy/cost sweep.

1. Wall-clock per sample of DefenseGAN's reconstruction at the given L, R, and of a bare loop
   doing only the L steps of batched generator forward+backward over B·R latents (the floor);
   both alternate ``--repeats`` times in one process on one device; prints the ratio (goal ≤ 1.25).
2. The sweep: (L, R) ∈ --sweep-L × --sweep-R as named defense variants through the ordinary
   runner, so every point is a stored record (``report`` plots them on the Pareto chart).

    python -m tools.defensegan --limit 100 --batch 50 [--device cuda] [--results-dir results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.api import DATASETS, BatchTimer, Config, Runner, device_name, resolve_device


def floor_loop(G: torch.nn.Module, x: torch.Tensor, L: int, R: int, z_dim: int, lr: float) -> torch.Tensor:
    z = torch.randn(x.shape[0] * R, z_dim, device=x.device).requires_grad_(True)
    target = x.repeat_interleave(R, 0)
    with torch.enable_grad():
        for _ in range(L):
            (g,) = torch.autograd.grad(((G(z) - target) ** 2).sum(), z)
            z = (z - lr * g).detach().requires_grad_(True)
    return z


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, default=200)
    p.add_argument("--R", type=int, default=10)
    p.add_argument("--batch", type=int, default=50, help="images per timed reconstruction")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=100, help="images in the sweep")
    p.add_argument("--sweep-L", default="25,50,100,200")
    p.add_argument("--sweep-R", default="1,4,10")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "defense-bench"))
    p.add_argument("--results-dir", default="results")
    p.add_argument("--recipe", default="cpu")
    p.add_argument("--z-init", default="", help="paper | prior (default: the recipe's)")
    a = p.parse_args()
    device = resolve_device(a.device)
    base = {"plugin": "defensegan", "recipe": a.recipe, **({"z_init": a.z_init} if a.z_init else {})}
    cfg = Config(
        defenses=["defensegan"],
        attack=["fgsm"],
        device=a.device,
        data_root=a.data_root,
        cache_dir=a.cache_dir,
        results_dir=a.results_dir,
        offline=True,
        limit=a.limit,
        defense_params={"defensegan": {"recipe": a.recipe}},
    )
    spec = DATASETS.get("mnist")()
    cfg.defense_params = {"defensegan": {**base, "L": a.L, "R": a.R}}
    with Runner(cfg, [Path(sys.executable).name, "-m", "tools.defensegan", *sys.argv[1:]]) as runner:
        d, _, data = runner.trained_defense(spec, "defensegan")
    x = data.test.x[: a.batch].to(device)
    t_def, t_floor = BatchTimer(device, 1), BatchTimer(device, 1)
    with torch.no_grad():
        for _ in range(a.repeats + 1):  # the first of each is warm-up
            t_def(lambda: d(x), len(x))
            t_floor(lambda: floor_loop(d.G, x, a.L, a.R, d.z_dim, d.lr), len(x))
    dm, fm = t_def.ms_per_sample(), t_floor.ms_per_sample()
    print(f"device: {device_name(device)}")
    print(
        f"DefenseGAN L={a.L} R={a.R}, batch {len(x)}: {dm:.3f} ms/sample (runs: "
        f"{', '.join(f'{v:.3f}' for v in t_def.timed)})"
    )
    print(
        f"floor (L·R batched G fwd+bwd only):  {fm:.3f} ms/sample (runs: "
        f"{', '.join(f'{v:.3f}' for v in t_floor.timed)})"
    )
    print(f"ratio defense/floor = {dm / fm:.3f}  (goal ≤ 1.25)")
    if a.no_sweep:
        return
    names, params = [], {}
    for L in map(int, a.sweep_L.split(",")):
        for R in map(int, a.sweep_R.split(",")):
            name = f"defensegan-L{L}-R{R}"
            names.append(name)
            params[name] = {**base, "L": L, "R": R}
    sweep = Config(
        defenses=names,
        attack=["fgsm"],
        eps=[spec.default_eps],
        limit=a.limit,
        device=a.device,
        data_root=a.data_root,
        cache_dir=a.cache_dir,
        offline=True,
        results_dir=a.results_dir,
        defense_params=params,
    )
    t0 = time.perf_counter()
    with Runner(sweep, ["perf-defensegan-sweep"]) as runner:
        records = runner.run()
    print(f"sweep on {a.limit} images, FGSM eps={spec.default_eps} ({time.perf_counter() - t0:.0f} s):")
    print(f"{'L':>5} {'R':>4} {'defended clean':>15} {'defended adv':>13} {'ms/sample':>10}")
    for r in records:
        hp = r["defense_params"]
        print(
            f"{hp['L']:>5} {hp['R']:>4} {r['defended_clean_acc']:>15.3f} {r['defended_adv_acc']:>13.3f} "
            f"{r['defense_ms_per_sample']:>10.3f}"
        )


if __name__ == "__main__":
    main()
