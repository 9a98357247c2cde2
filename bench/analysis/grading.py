"""Grading a recomputed cell against its stored record: identical, equivalent, not comparable, or differs.

``bench verify`` recomputes a cell from its stored identity. Bit-identical per-image outcomes are
the strong result. When they are not, whether that is a bug or the hardware depends on where the
record was computed:

* **identical** — all four per-image outcome bitmaps equal.
* **equivalent** — the machine differs from the record's in something that changes last bits
  (device, CPU vendor, the instruction set ATen ran at, BLAS, the numerics mode, torch's version)
  *and* every outcome's disagreement is noise-sized: at most ``MAX_FLIPPED`` of its images flip,
  the exact McNemar test of the flips (right → wrong vs wrong → right) does not reject at
  ``ALPHA``, and the recomputed accuracy lies inside the stored cell's 95% interval. Last-bit differences that an iterative attack or
  DefenseGAN's descent amplify flip a few images both ways; a real change moves them one way.
* **not comparable** — recorded on another kind of device (a GPU record recomputed on a CPU) and
  beyond noise: other kernels craft other adversarial examples; the cell is not bit-comparable,
  and that is no evidence of a bug.
* **differs** — any difference on the same machine class, or beyond noise on another CPU: a
  real change (code, data, weights) until shown otherwise.

``bench verify`` exits 0 when every cell is identical or equivalent, 3 when the worst grade is
"not comparable", 1 when any cell differs or cannot be recomputed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.analysis.paired import mcnemar_exact
from bench.core.record import OUTCOMES, decode

ALPHA = 0.05
# At most this share of one outcome's images may flip for a difference to count as noise: a
# balanced reshuffle of many images is a change even when McNemar's test cannot tell its direction.
# The largest hardware difference measured (DefenseGAN's descent, Intel vs AMD, native) flipped 3.2%.
MAX_FLIPPED = 0.05
GRADES = ("identical", "equivalent", "not comparable", "differs")
EXIT = {"identical": 0, "equivalent": 0, "not comparable": 3, "differs": 1}
ACC = {
    "clean": "clean_acc",
    "adv": "adv_acc",
    "defended_clean": "defended_clean_acc",
    "defended_adv": "defended_adv_acc",
}


def machine_of(rec: Mapping[str, Any], versions: dict[str, Any] | None = None) -> dict[str, str]:
    """What decides a record's last bits, from its own fields (older records: inferred from the
    CPU model and the BLAS line; no numerics field means ``native``)."""
    blas = str(rec.get("blas") or "")
    model = str(rec.get("cpu_model") or "")
    vendor = rec.get("cpu_vendor") or (
        "GenuineIntel" if "Intel" in model else "AuthenticAMD" if "AMD" in model else model or "unknown"
    )
    m = re.search(r"cpu kernels (\w+)", blas)
    device_type = str(rec.get("device_type") or "cpu")
    out = {
        "device": device_type if device_type == "cpu" else str(rec.get("device") or device_type),
        "cpu vendor": str(vendor),
        "instruction set": str(rec.get("cpu_capability") or (m.group(1) if m else "unknown")),
        "BLAS": blas.split(";")[0].strip() or "unknown",
        "numerics": str(rec.get("numerics") or "native"),
    }
    torch_version = (versions or {}).get("torch")
    if torch_version:
        out["torch"] = str(torch_version)
    return out


def machine_differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """``"cpu vendor GenuineIntel → AuthenticAMD"`` for each field both name and that differs."""
    return [f"{k} {a[k]} → {b[k]}" for k in a if k in b and a[k] != b[k]]


@dataclass
class Grade:
    grade: str
    why: str = ""  # what differs, per outcome
    machine: list[str] = field(default_factory=list)  # the machine differences seen

    @property
    def exit(self) -> int:
        return EXIT[self.grade]


def _noise(old: np.ndarray, new: np.ndarray, lo: Any, hi: Any) -> tuple[bool, str]:
    """(noise-sized?, a description) for one outcome's two bitmaps."""
    lost, gained = int((old & ~new).sum()), int((~old & new).sum())
    p = mcnemar_exact(lost, gained)
    acc = float(new.mean())
    known = lo is not None and hi is not None and lo == lo and hi == hi  # NaN bounds: none stored
    inside = not known or (float(lo) - 1e-12 <= acc <= float(hi) + 1e-12)
    few = lost + gained <= MAX_FLIPPED * len(old)
    return (p >= ALPHA and inside and few), (
        f"{old.mean():.4f} → {acc:.4f} ({lost + gained} of {len(old)} samples differ: "
        f"{lost} right → wrong, {gained} wrong → right; exact McNemar p = {p:.3g}"
        + ("" if inside else "; outside the stored 95% interval")
        + ("" if few else f"; more than {MAX_FLIPPED:.0%} of the images flipped")
        + ")"
    )


def grade(
    old: Mapping[str, Any], new: Mapping[str, Any] | None, here: dict[str, str], there: dict[str, str] | None = None
) -> Grade:
    """Grade ``new`` (recomputed here, on machine ``here``) against the stored ``old``.
    ``there``: the stored record's machine (default: from its own fields)."""
    if new is None:
        return Grade("differs", "not recomputed")
    there = there or machine_of(old)
    diffs = machine_differences(there, here)
    n = int(old.get("n") or 0)
    if n < 1 or int(new.get("n") or n) != n:
        return Grade("differs", f"n {old.get('n')} → {new.get('n')}", diffs)
    parts, noise = [], True
    for k in OUTCOMES:
        a, b = old["correct"].get(k), new["correct"].get(k)
        if a == b:
            continue
        if a is None or b is None:
            return Grade("differs", f"{k} missing on one side", diffs)
        try:
            ua, ub = decode(a, n).astype(bool), decode(b, n).astype(bool)
        except ValueError as exc:  # a bitmap of another length
            return Grade("differs", f"{k}: {exc}", diffs)
        ok, text = _noise(ua, ub, old.get(f"{ACC[k]}_ci_low"), old.get(f"{ACC[k]}_ci_high"))
        noise &= ok
        parts.append(f"{k} {text}")
    if not parts:
        return Grade("identical", "", diffs)
    why = "; ".join(parts)
    if diffs and noise:
        return Grade("equivalent", why, diffs)
    if there.get("device") != here.get("device") and "cpu" in (there.get("device"), here.get("device")):
        return Grade("not comparable", why, diffs)
    return Grade("differs", why, diffs)


def summary(grades: list[Grade]) -> tuple[str, int]:
    """The closing line (counts per grade, the machine differences seen) and the exit status."""
    counts = {g: sum(x.grade == g for x in grades) for g in GRADES}
    seen = sorted({d for x in grades for d in x.machine})
    line = f"[verify] {len(grades)} cell(s): " + ", ".join(f"{counts[g]} {g}" for g in GRADES)
    line += (
        ("; this machine differs from the records' in: " + ", ".join(seen))
        if seen
        else "; same machine class as the records"
    )
    return line, max((x.exit for x in grades), key=lambda e: (e == 1, e), default=0)
