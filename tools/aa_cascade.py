"""AutoAttack's cascade (``--attack aa``) against every component on every image
(``--attack aa-individual``): seconds and passes through the attacked model per mode, one run each.

Each mode runs into a fresh results folder (nothing shared: both compute APGD-CE), after one
warm-up run that loads or trains the classifier and defenses. It prints, per defense and in
all, the wall-clock seconds of each mode's run, the forward and backward passes per image of its
suite row (``attack_forward_per_sample``, ``attack_backward_per_sample``: the stages' or the
components' added up), the robust accuracy of each, and how many images the two rows disagree on
(images whose result depends on their batch companions can; batch size 1 makes them agree). A
speed claim is this script's printed ratio from one run, never a timed test.

    python -m tools.aa_cascade --defenses none,bitdepth --limit 32
    python -m tools.aa_cascade --defenses none,bitdepth --limit 32 --config small-aa.toml  # budgets
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api import Runner, decode, device_name, resolve, resolve_device, validate

MODES = {"cascade": "aa", "individual": "aa-individual"}


def run(cli: dict[str, Any], config: str | None, results: Path) -> tuple[float, list[dict[str, Any]]]:
    cfg = resolve({**cli, "results_dir": str(results), "rerun": True}, config)
    validate(cfg)
    t0 = time.perf_counter()
    with Runner(cfg, [Path(sys.executable).name, "-m", "tools.aa_cascade", *sys.argv[1:]]) as runner:
        records = runner.run()
    return time.perf_counter() - t0, records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--defenses", default="none,bitdepth")
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--eps", type=float, default=None, help="default: the dataset's")
    p.add_argument("--threat", default="white")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--config", default=None, help="a bench.toml ([attacks.aa-…] budgets); default ./bench.toml")
    p.add_argument("--device", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    cli = {
        "defenses": a.defenses.split(","),
        "limit": a.limit,
        "threat": a.threat.split(","),
        "eps": None if a.eps is None else [a.eps],
        "batch_size": a.batch_size,
        "device": a.device,
        "cache_dir": a.cache_dir,
        "data_root": a.data_root,
        "offline": True,
    }
    got: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run({**cli, "attack": ["fgsm"]}, a.config, Path(tmp) / "warm")  # classifier and defenses loaded/trained
        for mode, suite in MODES.items():
            got[mode] = run({**cli, "attack": [suite]}, a.config, Path(tmp) / mode)
    device = resolve_device(resolve({k: v for k, v in cli.items() if k == "device"}, a.config).device)
    print(f"device: {device_name(device)}")
    print(f"grid: {a.defenses} × threat {a.threat}, {a.limit} images, aa (cascade) vs aa-individual")
    rows: dict[str, dict[tuple, dict[str, Any]]] = {}
    for mode, suite in MODES.items():
        rows[mode] = {(r["defense"], r["threat"], r["eps"]): r for r in got[mode][1] if r["attack"] == suite}
    total = {m: [0.0, 0.0] for m in MODES}
    for key in sorted(rows["cascade"], key=str):
        c, i = rows["cascade"][key], rows["individual"].get(key)
        if i is None:
            continue
        n = int(c["n"])
        differ = int((decode(c["correct"]["defended_adv"], n) != decode(i["correct"]["defended_adv"], n)).sum())
        print(
            f"  {key[0]} ({key[1]}, eps {key[2]:g}): robust {c['defended_adv_acc']:.3f} cascade / "
            f"{i['defended_adv_acc']:.3f} individual ({differ} image(s) differ); passes per image "
            f"{c.get('attack_forward_per_sample', 0):.1f} fwd + {c.get('attack_backward_per_sample', 0):.1f} bwd "
            f"cascade / {i.get('attack_forward_per_sample', 0):.1f} fwd + "
            f"{i.get('attack_backward_per_sample', 0):.1f} bwd individual"
        )
        for mode, r in (("cascade", c), ("individual", i)):
            total[mode][0] += r.get("attack_forward_per_sample") or 0
            total[mode][1] += r.get("attack_backward_per_sample") or 0
    for mode in MODES:
        print(
            f"{mode:10s} {got[mode][0]:8.1f} s   passes per image (summed over defenses): "
            f"{total[mode][0]:.1f} forward, {total[mode][1]:.1f} backward"
        )
    sec = got["individual"][0] / max(got["cascade"][0], 1e-9)
    fwd = total["individual"][0] / max(total["cascade"][0], 1e-9)
    bwd = total["individual"][1] / max(total["cascade"][1], 1e-9)
    print(
        f"ratio individual/cascade: {sec:.2f}× seconds, {fwd:.2f}× forward passes, {bwd:.2f}× backward passes "
        "(one run each)"
    )


if __name__ == "__main__":
    main()
