"""Per-sample outcomes as bitmaps, and the statistics read from them: the codec every stored
record's ``correct`` uses, one bit per test image (right = 1), packed MSB first, written as hex.

The worst case over attacks, the paired tests, the leaderboard and ``bench verify`` all read these,
so they are encoded and decoded here only. NumPy only: a tensor is accepted wherever an array is
(anything with ``.detach()``), and ``decode_tensor`` loads torch when it is called, so the record
type (``bench.core.record``) and whatever reads records never import torch for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.core.stats import wilson

OUTCOMES = ("clean", "adv", "defended_clean", "defended_adv")


def as_array(mask: Any) -> np.ndarray:
    """A boolean-able array from a NumPy array, a list or a torch tensor (on any device)."""
    return mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)


def encode(mask: Any) -> str:
    """Per-sample booleans as a hex string."""
    return np.packbits(as_array(mask).astype(bool)).tobytes().hex()


def decode(hexstr: str, n: int) -> np.ndarray:
    """A stored bitmap as ``n`` booleans (ValueError when it holds fewer)."""
    out = np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))[:n].astype(bool)
    if len(out) != n:
        raise ValueError(f"bitmap holds {len(out)} samples, expected {n}")
    return out


def decode_tensor(hexstr: str, n: int) -> Any:
    """``decode`` as a torch bool tensor (torch is loaded here, by the code that computes)."""
    import torch

    return torch.from_numpy(decode(hexstr, n))


def first_images(rec: Any, n: int, outcome: str = "defended_adv") -> np.ndarray | None:
    """A record's per-sample outcome on the first ``n`` of its images (a run of N images scored the
    first N of its test split, so records of different N meet on the first min-N); None when the
    record stores no bitmap for it."""
    c = rec.get("correct")
    size = rec.get("n")
    if not isinstance(c, dict) or not isinstance(c.get(outcome), str) or size is None or size != size:
        return None
    try:
        return decode(c[outcome], int(size))[:n]
    except ValueError:
        return None


def accuracies(outcomes: Mapping[str, Any]) -> dict[str, float]:
    """Accuracy with its Wilson 95% interval for each outcome's per-sample correctness."""
    out = {}
    for name in OUTCOMES:
        ok = as_array(outcomes[name])
        k, n = int(ok.sum()), len(ok)
        out[f"{name}_acc"] = k / n
        out[f"{name}_acc_ci_low"], out[f"{name}_acc_ci_high"] = wilson(k, n)
    return out


def resubmission(draws: dict[str, list[Any]]) -> dict[str, Any]:
    """Per-sample outcomes of N draws of a randomised defense (``outcome → [N boolean arrays]``):
    ``worst`` (right on every draw: the robust outcome, as a pair of boolean arrays for
    defended_clean and defended_adv), and for each outcome the expected accuracy (mean over draws),
    the majority vote's accuracy with its Wilson interval and bitmap, the first draw's accuracy."""
    out: dict[str, Any] = {"resubmit_correct": {}}
    worst = []
    for name, oks in draws.items():
        stack = np.stack([as_array(o).astype(bool) for o in oks])
        n_draws, n = stack.shape
        majority = stack.sum(0) * 2 > n_draws
        k = int(majority.sum())
        out[f"{name}_acc_expected"] = float(stack.mean())
        out[f"{name}_acc_majority"] = k / n
        out[f"{name}_acc_majority_ci_low"], out[f"{name}_acc_majority_ci_high"] = wilson(k, n)
        out[f"{name}_acc_first_draw"] = float(stack[0].mean())
        out["resubmit_correct"][f"{name}_majority"] = encode(majority)
        out["resubmit_correct"][f"{name}_first_draw"] = encode(stack[0])
        worst.append(stack.all(0))
    out["worst"] = tuple(worst)
    return out
