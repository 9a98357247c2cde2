"""The stored record: one type, one constructor, one reader, one bitmap codec.

A record is one evaluated cell (``kind = "cell"``) or one per-sample worst case over cells
(``kind = "worst"``), written one JSON object a line by ``bench.store.runs.RunWriter``. It is a
plain dict on disk and in memory (pandas frames read it as is); ``Record`` lists its fields and
what they mean, ``make`` is the only function that builds one (the runner's worker and driver
call it), ``load`` the only one that reads one back (it brings older layouts up to this one).

Per-sample outcomes: for each of ``OUTCOMES``, one bit per test image (right = 1), packed MSB
first and written as hex. The worst case over attacks, the paired tests, the leaderboard and
``bench verify`` all read these, so they are encoded and decoded here only.
"""
from __future__ import annotations

from typing import Any, Iterable, Literal, TypedDict

import numpy as np
import torch

from bench.core.stats import wilson

SCHEMA = 2  # 1: records written before this field existed (same fields; "kind" implied by "attack")
OUTCOMES = ("clean", "adv", "defended_clean", "defended_adv")
ACCURACIES = ("clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc")


class Record(TypedDict, total=False):
    """One stored result. Identity first (what the number *is*), then the numbers, then provenance."""

    schema: int
    kind: Literal["cell", "worst"]
    cell_key: str                 # bench.core.identity.key(identity)
    identity: dict[str, Any]      # bench.core.identity.cell_identity: the only source of "same cell"
    # what was evaluated (flat copies of identity fields, for tables and filters)
    dataset: str
    classifier: str
    classifier_hash: str
    defense: str
    defense_params: dict[str, Any]
    attack: str                   # "worst" for a worst-case row
    attack_params: dict[str, Any]
    attack_labels: str            # "true" | "predicted"
    norm: str
    eps: float | None
    threat: str                   # a threat model, or "all" for the worst over threat models
    threat_effective: str
    eot_samples: int
    iterative: bool
    seed: int
    n: int
    limit: int | None
    batch_size: int
    # the numbers: accuracy and its Wilson 95% interval for each outcome, and the bitmaps
    clean_acc: float
    clean_acc_ci_low: float
    clean_acc_ci_high: float
    adv_acc: float
    adv_acc_ci_low: float
    adv_acc_ci_high: float
    defended_clean_acc: float
    defended_clean_acc_ci_low: float
    defended_clean_acc_ci_high: float
    defended_adv_acc: float
    defended_adv_acc_ci_low: float
    defended_adv_acc_ci_high: float
    correct: dict[str, str]       # outcome → hex bitmap (``encode``)
    max_linf: float
    checks: list[str]             # warnings: the number is not a robustness claim as it stands
    # cost
    classifier_ms_per_sample: float | None
    attack_ms_per_sample: float | None
    # passes the attack made through the model it attacks (bench.run.passes), summed over its
    # batches and divided by n (every test image: a cascade's stages add up); a suite row: the sum
    # over its members. Absent from records stored before they were counted.
    attack_forward_per_sample: float
    attack_backward_per_sample: float
    defense_ms_per_sample: float | None
    timing_batches: int
    # provenance (the run's env.json holds the rest: command line, versions, git commit)
    run_id: str
    device: str
    device_type: str
    cpu_model: str
    torch_threads: int
    blas: str
    numerics: str                 # bench.core.numerics mode in force: "portable" or "native"
    cpu_vendor: str               # GenuineIntel, AuthenticAMD …
    cpu_capability: str           # the instruction set ATen's CPU kernels ran at (AVX512, AVX2 …)
    cuda_deterministic: dict[str, Any]  # on CUDA: cuDNN deterministic / benchmark, torch's flag, cuBLAS
    time: float
    samples: str                  # path of a few images (.npz) for the report's grid
    gradient_free: bool           # the attack reads no gradient (Square): the masking check's witness
    # a cascade stage (``--attack aa``'s APGD-T, FAB-T, Square): the earlier stages' attacks, and
    # the images it ran on (hex bitmap, those the previous stage left robust); its outcomes are
    # "robust after this stage": an image it did not run on keeps the previous stage's outcomes
    cascade: list[str]
    ran_on: str
    # resubmission (``--resubmit N`` on a randomised defense): defended_* are then the worst over
    # N draws (right on every draw); these hold the mean over draws, the majority vote, draw 1
    resubmit: int
    defended_adv_acc_expected: float
    defended_adv_acc_majority: float
    defended_adv_acc_majority_ci_low: float
    defended_adv_acc_majority_ci_high: float
    defended_adv_acc_first_draw: float
    defended_clean_acc_expected: float
    defended_clean_acc_majority: float
    defended_clean_acc_majority_ci_low: float
    defended_clean_acc_majority_ci_high: float
    defended_clean_acc_first_draw: float
    resubmit_correct: dict[str, str]  # "<outcome>_majority" / "<outcome>_first_draw" → hex bitmap


# Fields every record of a kind carries: ``make`` refuses to build one without them.
REQUIRED = {
    "cell": ("cell_key", "identity", "dataset", "classifier", "defense", "attack", "eps", "threat", "n",
             "correct", "device", "time"),
    "worst": ("cell_key", "identity", "dataset", "classifier", "defense", "attack", "eps", "threat", "n",
              "correct", "time"),
}


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


def robust_on_first(recs: Iterable[Any], n: int, outcome: str = "defended_adv") -> np.ndarray | None:
    """Per-sample worst case over records of possibly different n, on the first ``n`` images (an
    image is right only where every record has it right); None when one stores no bitmap."""
    maps = [first_images(r, n, outcome) for r in recs]
    if not maps or any(m is None for m in maps):
        return None
    return np.logical_and.reduce(maps)


def decode_tensor(hexstr: str, n: int) -> torch.Tensor:
    return torch.from_numpy(decode(hexstr, n))


def accuracies(outcomes: dict[str, Any]) -> dict[str, float]:
    """Accuracy with its Wilson 95% interval for each outcome's per-sample correctness."""
    out = {}
    for name in OUTCOMES:
        ok = np.asarray(outcomes[name].cpu() if isinstance(outcomes[name], torch.Tensor) else outcomes[name])
        k, n = int(ok.sum()), len(ok)
        out[f"{name}_acc"] = k / n
        out[f"{name}_acc_ci_low"], out[f"{name}_acc_ci_high"] = wilson(k, n)
    return out


def resubmission(draws: dict[str, list[Any]]) -> dict[str, Any]:
    """Per-sample outcomes of N draws of a randomised defense (``outcome → [N boolean arrays]``):
    ``worst`` (right on every draw: the robust outcome, as a pair for defended_clean and
    defended_adv), and for each outcome the expected accuracy (mean over draws), the majority
    vote's accuracy with its Wilson interval and bitmap, the first draw's accuracy."""
    out: dict[str, Any] = {"resubmit_correct": {}}
    worst = []
    for name, oks in draws.items():
        stack = np.stack([np.asarray(o.cpu() if isinstance(o, torch.Tensor) else o, bool) for o in oks])
        n_draws, n = stack.shape
        majority = stack.sum(0) * 2 > n_draws
        k = int(majority.sum())
        out[f"{name}_acc_expected"] = float(stack.mean())
        out[f"{name}_acc_majority"] = k / n
        out[f"{name}_acc_majority_ci_low"], out[f"{name}_acc_majority_ci_high"] = wilson(k, n)
        out[f"{name}_acc_first_draw"] = float(stack[0].mean())
        out["resubmit_correct"][f"{name}_majority"] = encode(majority)
        out["resubmit_correct"][f"{name}_first_draw"] = encode(stack[0])
        worst.append(torch.from_numpy(stack.all(0)))
    out["worst"] = tuple(worst)
    return out


def make(kind: Literal["cell", "worst"], outcomes: dict[str, Any], **fields: Any) -> Record:
    """The one constructor of a stored record: ``fields`` plus the bitmaps and accuracies of the
    per-sample ``outcomes`` (one boolean array per ``OUTCOMES``)."""
    rec: dict[str, Any] = {"schema": SCHEMA, "kind": kind, **fields,
                           "correct": {k: encode(outcomes[k]) for k in OUTCOMES}, **accuracies(outcomes)}
    rec["checks"] = list(rec.get("checks") or [])
    absent = [k for k in REQUIRED[kind] if k not in rec]
    if absent:
        raise ValueError(f"a {kind} record needs {', '.join(absent)}")
    return rec  # type: ignore[return-value]


def load(raw: dict[str, Any]) -> Record:
    """A stored record as this code reads it: older layouts brought up to ``SCHEMA`` (the fields a
    schema-1 record lacks are derived, never guessed: its kind from its attack)."""
    rec = dict(raw)
    version = rec.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 2:
        rec.setdefault("kind", "worst" if rec.get("attack") == "worst" else "cell")
    if not isinstance(rec.get("checks"), list):
        rec["checks"] = []
    rec["schema"] = SCHEMA
    return rec  # type: ignore[return-value]


def worst_case(corrects: Iterable[dict[str, str]], n: int) -> dict[str, np.ndarray]:
    """Per-sample worst case over cells of one test set: an image counts as right only where it
    is right in every cell, for each outcome."""
    corrects = list(corrects)
    return {k: np.logical_and.reduce([decode(c[k], n) for c in corrects]) for k in OUTCOMES}

