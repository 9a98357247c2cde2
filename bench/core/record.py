"""What a stored record holds beside its identity: per-sample outcome bitmaps, in one codec.

A cell stores, for each of ``OUTCOMES``, one bit per test image (right = 1), packed MSB first
and written as hex: the worst case over attacks, the paired tests, the leaderboard and
``bench verify`` all read these, so they are encoded and decoded here only.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

OUTCOMES = ("clean", "adv", "defended_clean", "defended_adv")


def encode(mask: torch.Tensor | np.ndarray) -> str:
    """Per-sample booleans as a hex string."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return np.packbits(arr.astype(bool)).tobytes().hex()


def decode(hexstr: str, n: int) -> np.ndarray:
    """A stored bitmap as ``n`` booleans (ValueError when it holds fewer)."""
    out = np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))[:n].astype(bool)
    if len(out) != n:
        raise ValueError(f"bitmap holds {len(out)} samples, expected {n}")
    return out


def decode_tensor(hexstr: str, n: int) -> torch.Tensor:
    return torch.from_numpy(decode(hexstr, n))


def worst_case(corrects: Iterable[dict[str, str]], n: int) -> dict[str, np.ndarray]:
    """Per-sample worst case over cells of one test set: an image counts as right only where it
    is right in every cell, for each outcome."""
    corrects = list(corrects)
    return {k: np.logical_and.reduce([decode(c[k], n) for c in corrects]) for k in OUTCOMES}


def schema(rec: dict[str, Any]) -> int:
    """The record layout version (records written before it was stored are version 1)."""
    return int(rec.get("schema", 1))
