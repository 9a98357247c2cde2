"""The harness's AutoAttack (``--attack aa``: the standard version as a cascade) against the
original, the authors' own code (``pyautoattack``, fra31/auto-attack on the package index, MIT:
``pip install -e '.[reference]'``), side by side on the same model, images and batches, one after
the other in this process: wall-clock seconds, passes through the model, robust accuracy, and the
images whose outcome differs.

    python -m tools.aa_versus_original --defense countergan-adaptive-long --limit 64
    python -m tools.aa_versus_original --defense none --classifier mnist-cnn-pgdat --limit 64

Both see the model a white-box cell attacks (``bench.api.attacked_model``: the classifier behind the
defense, the weights of the shipped zoo) and the first ``--limit`` test images, in batches of
``--batch-size`` (the harness's default, 256, for both: a batch's random starts depend on its
members, so equal batches are what make equal outcomes possible). The harness's time is its whole
``bench.evaluate`` call (loading, crafting, defending, scoring, probes); the original's is its
``run_standard_evaluation`` (its checks, clean accuracy and the four attacks). A speed claim is
this script's printed ratio from one run, with its machine: never a timed test.
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import time
from typing import Any

from bench import numerics

numerics.apply("portable")  # before torch loads its kernels: the CLI's default mode, for both sides

import torch  # noqa: E402
from torch import nn  # noqa: E402

import bench  # noqa: E402
from bench.api import attacked_model, decode_tensor  # noqa: E402

STAGES = ("aa-apgd-ce", "aa-apgd-t", "aa-fab-t", "aa-square")
ORIGINAL_STAGE = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")


class Counted(nn.Module):
    """``model`` with the images of its forward and backward passes counted."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forward_images, self.backward_images = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_images += len(x)
        if x.requires_grad and torch.is_grad_enabled():
            x = x.view_as(x)
            x.register_hook(self._backward)
        return self.model(x)

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward_images += len(grad)


class StageLog(logging.Handler):
    """The original's per-attack lines: (attack, robust accuracy, cumulative seconds)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: list[tuple[str, float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = ORIGINAL_STAGE.search(record.getMessage())
        if m:
            self.stages.append((m[1], float(m[2]) / 100, float(m[3])))


def harness(a: argparse.Namespace, settings: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    records = bench.evaluate(defenses=[a.defense], attack=["aa"], threat=["white"], **settings)
    seconds = time.perf_counter() - t0
    (row,) = [r for r in records if r["attack"] == "aa"]
    n = int(row["n"])
    stages = {}
    for r in records:
        if r["attack"] in STAGES:
            ran = int(decode_tensor(r["ran_on"], n).sum()) if r.get("ran_on") else n
            stages[r["attack"]] = (r["defended_adv_acc"], (r["attack_ms_per_sample"] or 0.0) * ran / 1000)
    passes = sum(r["attack_forward_per_sample"] * n for r in records if r["attack"] in STAGES)
    back = sum(r["attack_backward_per_sample"] * n for r in records if r["attack"] in STAGES)
    mask = decode_tensor(row["correct"]["defended_adv"], n)
    return seconds, {"mask": mask, "stages": stages, "forward": passes, "backward": back}


def original(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int) -> tuple[float, dict]:
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise SystemExit("the original AutoAttack is an optional extra: pip install -e '.[reference]'") from None
    counted = Counted(model).eval()
    log = StageLog()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    aa = AutoAttack(counted, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    t0 = time.perf_counter()
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    logger.removeHandler(log)
    mask = y_adv == y  # its own verdict: the label of its adversarial example (robust: still right)
    return seconds, {
        "mask": mask,
        "stages": log.stages,
        "forward": counted.forward_images,
        "backward": counted.backward_images,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--defense", default="countergan-adaptive-long")
    p.add_argument("--classifier", default=None, help="default: the dataset's (mnist-cnn)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--eps", type=float, default=None, help="default: the dataset's (0.3 on MNIST)")
    p.add_argument("--batch-size", type=int, default=256)
    a = p.parse_args()
    settings: dict[str, Any] = {
        "dataset": [a.dataset],
        "limit": a.limit,
        "batch_size": a.batch_size,
        "offline": True,
        **({"classifier": a.classifier} if a.classifier else {}),
        **({"eps": [a.eps]} if a.eps else {}),
    }
    model, x, y = attacked_model(a.defense, **settings)
    eps = a.eps or (0.3 if x.shape[1] == 1 else 8 / 255)
    bench.evaluate(defenses=[a.defense], attack=["fgsm"], **{**settings, "limit": 8})  # warm-up: kernels, caches
    h_s, h = harness(a, settings)
    o_s, o = original(model, x, y, eps, a.batch_size)
    n = len(y)
    differ = (h["mask"] != o["mask"]).nonzero().flatten().tolist()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, numerics {numerics.mode_in_force()} ({numerics.cpu_capability()})"
    )
    print(
        f"model: {a.defense} in front of {a.classifier or 'the default classifier'}, white-box, eps {eps:g}, "
        f"{n} images, batches of {a.batch_size}"
    )
    print(f"{'':10} {'seconds':>9} {'forward/img':>12} {'backward/img':>13} {'robust':>8}")
    for name, s, r in (("harness", h_s, h), ("original", o_s, o)):
        print(f"{name:10} {s:9.1f} {r['forward'] / n:12.1f} {r['backward'] / n:13.1f} {r['mask'].float().mean():8.3f}")
    print(
        f"harness / original: {h_s / o_s:.3f} of the wall-clock, {h['forward'] / max(o['forward'], 1):.3f} of the "
        f"forward passes, {h['backward'] / max(o['backward'], 1):.3f} of the backward passes"
    )
    print(f"per-image outcomes: {n - len(differ)} of {n} identical" + (f"; differ: images {differ}" if differ else ""))
    print(
        "harness stages (robust after, seconds crafting): "
        + ", ".join(f"{k} {acc:.3f} {sec:.1f} s" for k, (acc, sec) in h["stages"].items())
    )
    last = 0.0
    parts = []
    for name, acc, cum in o["stages"]:
        parts.append(f"{name} {acc:.3f} {cum - last:.1f} s")
        last = cum
    print("original stages (robust after, seconds): " + ", ".join(parts))


if __name__ == "__main__":
    main()
