"""The shape contract of a plugin's output, as plain tensor checks (no runner): what the harness
checks where a plugin's output enters it (``bench.run.contract``), and what a plugin author's own
tests can call (``bench.plugin``).

A defense maps NCHW images in [0,1] to images of the same shape, dtype and device in [0,1]; an
attack returns adversarial images of its input's shape, dtype and device. A wrong shape, dtype or
device, or a NaN/inf value, raises ``ContractError`` naming the plugin; values outside [0,1] beyond
``RANGE_TOL`` are the caller's to flag (``out_of_range``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.core.errors import ContractError

RANGE_TOL = 1e-5  # float error allowed outside [0,1] (a blend or a resize rounds a little past 1)


def describe(t: Any) -> str:
    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__}, not a tensor"
    return f"shape {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"


def same_kind(kind: str, name: str, where: str, given: torch.Tensor, out: Any) -> tuple[float, float]:
    """Raise ``ContractError`` unless ``out`` is a finite tensor of ``given``'s shape, dtype and
    device; return its (min, max)."""
    if (
        not isinstance(out, torch.Tensor)
        or out.shape != given.shape
        or out.dtype != given.dtype
        or out.device != given.device
    ):
        raise ContractError(
            f"{kind} {name!r} returned {describe(out)} for an input of {describe(given)} (in {where}); "
            f"a {kind} must return its input's shape, dtype and device"
        )
    if not out.numel():
        return 0.0, 1.0
    lo, hi = (v.item() for v in torch.aminmax(out.detach()))  # NaN propagates into both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(out.detach())).sum())
        raise ContractError(
            f"{kind} {name!r} returned {bad} NaN/inf value(s) among {out.numel()} (in {where}); "
            f"a {kind} must return finite images in [0,1]"
        )
    return lo, hi


def defense_output(name: str, where: str, given: torch.Tensor, out: Any) -> tuple[float, float]:
    """Check a defense's output for ``given``; its (min, max) for the range flag."""
    return same_kind("defense", name, where, given, out)


def out_of_range(lo: float, hi: float) -> bool:
    return lo < -RANGE_TOL or hi > 1 + RANGE_TOL


def check_defense(defense: Any, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
    """Run ``defense`` on ``x`` (no gradient) and check its output: the shape contract, and values
    in [0,1] — ``ContractError`` otherwise. Returns the output. For a plugin's own tests::

        out = check_defense(MyDefense(), torch.rand(4, 1, 28, 28))
    """
    label = name or getattr(defense, "registered_name", None) or type(defense).__name__
    with torch.no_grad():
        out = defense(x)
    lo, hi = defense_output(label, "check_defense", x, out)
    if out_of_range(lo, hi):
        raise ContractError(
            f"defense {label!r} returned values in [{lo:.4g}, {hi:.4g}]; a defense must return images in [0,1]"
        )
    return out
