"""CPU and GPU side by side: the ``devices`` block of docs/results/devices.md (``python -m bench report --devices``).

Three tables, each generated from stored measurements, never typed:

* ``timing`` — every cell two results folders both hold (the same identity but for the device:
  data, classifier, defense and its weights, attack, threat model, n), the defense's wall-clock per
  image on each device and their ratio, with the defended accuracy on each (other kernels, other
  adversarial examples: close, not equal).
* ``pairs`` — DefenseGAN (``defensegan``, at its own settings, shown) against the counterGAN
  preset (``countergan``) on the same attacked images, per device: the ratio of their defense
  times, from one run where a device has both in one (measured side by side), else from two runs,
  named.
* ``reconstruction`` — DefenseGAN's reconstruction under eager, CUDA graphs, ``torch.compile`` and
  both, beside its floor (``step4-reconstruction.jsonl``, written by ``tools.defensegan_compile``, then step 4 of the GPU script): ms per image and
  the speed-up over eager, per generator width.

An absolute time is only ever shown with its device; only ratios of one device are comparable
across machines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.errors import BenchError
from bench.core.identity import canonical, group_key, of_record
from bench.core.labels import fmt_eps
from bench.core.threats import threat_name
from bench.render.blocks import fill as fill_block

PAIR = ("defensegan", "countergan")  # the slow purifier and the fast one, by their registered names
RECONSTRUCTION = "step4-reconstruction.jsonl"  # tools.defensegan_compile's measurements (the file name of its first run), one JSON object a line
VARIANTS = {
    "eager": "eager",
    "graphs": "CUDA graphs",
    "compile": "torch.compile",
    "compile+graphs": "compile + graphs",
    "floor": "floor",
    "floor+graphs": "floor + graphs",
    "eager-func": "eager (torch.func)",
}


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def kind(rec: Any) -> str:
    """``cuda`` or ``cpu``: the device type a record was computed on."""
    t = _text(rec.get("device_type"))
    if t:
        return t
    return "cpu" if (_text(rec.get("device")) or "cpu").startswith("cpu") else "cuda"


def device_label(rec: Any) -> str:
    """A device as a table names it: a GPU by its name; a CPU with its torch threads and model."""
    if kind(rec) == "cuda":
        return _text(rec.get("gpu")) or _text(rec.get("device")) or "GPU"
    threads = _number(rec.get("torch_threads"))
    if threads is None:
        m = re.search(r"(\d+) threads?", _text(rec.get("device")) or "")
        threads = float(m.group(1)) if m else None
    model = _text(rec.get("cpu_model"))
    return (
        "CPU"
        + (f", {int(threads)} thread{'s' if threads != 1 else ''}" if threads is not None else "")
        + (f" ({model})" if model else "")
    )


def same_cell(rec: Any) -> str:
    """What a cell is on any device: its identity without the device type."""
    ident = dict(of_record(rec))
    ident.pop("device_type", None)
    return canonical(ident)


def _ms(v: Any) -> str:
    f = _number(v)
    return "—" if f is None else f"{f:.3g}"


def _times(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def _ratio(a: Any, b: Any) -> float | None:
    a, b = _number(a), _number(b)
    return a / b if a is not None and b else None


def _cells(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The evaluated cells of a frame (no worst-case rows), as plain dicts."""
    if df.empty:
        return []
    recs = df.to_dict("records")
    return [r for r in recs if r.get("kind") == "cell"]


def _one_device(cells: list[dict[str, Any]], where: str) -> str:
    kinds = sorted({kind(c) for c in cells})
    if len(kinds) != 1:
        raise BenchError(f"{where} holds cells of {' and '.join(kinds) or 'no device'}: give one folder per device")
    return kinds[0]


def _label(labels: Iterable[str]) -> str:
    return " / ".join(sorted(set(labels)))


def timing(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str] = ("A", "B")) -> list[tuple[str, pd.DataFrame]]:
    """Per cell both frames hold (the same identity but for the device), defense ms/sample on each,
    the ratio a/b, and the defended accuracy on each: one table per attacked test set."""
    ca, cb = _cells(a), _cells(b)
    kind_a, kind_b = _one_device(ca, names[0]), _one_device(cb, names[1])
    if kind_a == kind_b:
        raise BenchError(f"{names[0]} and {names[1]} both hold {kind_a} cells: give one folder per device")
    on_b = {same_cell(c): c for c in cb}
    groups: dict[tuple, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for c in ca:
        twin = on_b.get(same_cell(c))
        if twin is None:
            continue
        test = (c.get("dataset"), c.get("classifier"), c.get("attack"), c.get("eps"), c.get("threat"), c.get("n"))
        groups.setdefault(test, []).append((c, twin))
    out = []
    for (ds, clf, attack, eps, threat, n), pairs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        da = _label(device_label(x) for x, _ in pairs)
        db = _label(device_label(y) for _, y in pairs)
        rows = [
            {
                "defense": x.get("defense"),
                f"ms/sample on {da}": _ms(x.get("defense_ms_per_sample")),
                f"ms/sample on {db}": _ms(y.get("defense_ms_per_sample")),
                "speed-up": _times(_ratio(x.get("defense_ms_per_sample"), y.get("defense_ms_per_sample"))),
                "defended accuracy": f"{float(x['defended_adv_acc']):.3f} / {float(y['defended_adv_acc']):.3f}",
            }
            for x, y in sorted(pairs, key=lambda p: str(p[0].get("defense")))
        ]
        title = (
            f"{ds} · {clf} · {attack} ε = {fmt_eps(eps)} · {threat_name(str(threat))}, the first {n} test "
            f"images — defense wall-clock per image on {da} beside {db}; speed-up = the first over the "
            f"second; defended accuracy on each, in that order"
        )
        out.append((title, pd.DataFrame(rows)))
    return out


def _params(rec: dict[str, Any]) -> str:
    given = rec.get("defense_params")
    p: dict[str, Any] = given if isinstance(given, dict) else {}
    shown = [f"{k} = {p[k]}" for k in ("L", "R") if k in p]
    return f" ({', '.join(shown)})" if shown else ""


def pairs(sources: dict[str, pd.DataFrame], pair: tuple[str, str] = PAIR) -> pd.DataFrame:
    """``pair[0]`` against ``pair[1]`` on the same attacked images, per device: each of ``pair[0]``'s
    cells with a ``pair[1]`` cell that differs from it only in the defense, from the same run when
    one exists (measured side by side), else from another run (named). ``sources``: folder → frame."""
    slow, fast = pair
    cells = [(src, c) for src, df in sources.items() for c in _cells(df)]
    by_test: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for src, c in cells:
        if c.get("defense") == fast:
            by_test.setdefault(group_key(c, ("defense",)), []).append((src, c))
    rows: list[dict[str, Any]] = []
    for src, c in cells:
        if c.get("defense") != slow:
            continue
        twins = by_test.get(group_key(c, ("defense",)), [])
        if not twins:
            continue
        # The same run first (side by side), then the latest.
        tsrc, twin = min(
            twins, key=lambda t: (t[1].get("run_id") != c.get("run_id"), -(_number(t[1].get("time")) or 0))
        )
        one_run = twin.get("run_id") == c.get("run_id")
        rows.append(
            {
                "device": _label([device_label(c), device_label(twin)]),
                "n": c.get("n"),
                f"{slow} ms/sample": f"{_ms(c.get('defense_ms_per_sample'))}{_params(c)}",
                f"{fast} ms/sample": _ms(twin.get("defense_ms_per_sample")),
                "ratio": _times(_ratio(c.get("defense_ms_per_sample"), twin.get("defense_ms_per_sample"))),
                "measured": (
                    f"side by side, one run ({src}, run {c.get('run_id')})"
                    if one_run
                    else f"not side by side: two runs ({src}, run {c.get('run_id')}; {tsrc}, run {twin.get('run_id')})"
                ),
                "_order": (kind(c) == "cuda", str(c.get("classifier")), int(c.get("n") or 0)),
            }
        )
    if not rows:
        return pd.DataFrame()
    order: list[tuple[bool, str, int]] = [r.pop("_order") for r in rows]  # CPUs first, then by classifier and n
    return pd.DataFrame([rows[i] for i in sorted(range(len(rows)), key=order.__getitem__)])


def read_reconstruction(path: Path) -> list[dict[str, Any]]:
    """tools.gpu step 4's lines (a torn last line is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in out if isinstance(r, dict) and "variant" in r and "width" in r]


def reconstruction(recs: list[dict[str, Any]]) -> tuple[str, pd.DataFrame]:
    """One row per generator width: each variant's ms per image and its speed-up over eager."""
    if not recs:
        return "", pd.DataFrame()
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in recs)]
    variants += sorted({r["variant"] for r in recs} - set(variants))
    rows: list[dict[str, Any]] = []
    for width in sorted({r["width"] for r in recs}):
        mine = {r["variant"]: r for r in recs if r["width"] == width}
        eager = _number((mine.get("eager") or {}).get("ms_per_sample"))
        row: dict[str, Any] = {"generator width": str(width)}
        for v in variants:
            r = mine.get(v)
            ms = _number(r.get("ms_per_sample")) if r and r.get("status") == "ok" else None
            if ms is None:
                row[VARIANTS.get(v, v)] = f"— ({r.get('status')}: {r.get('note')})" if r else "—"
            else:
                row[VARIANTS.get(v, v)] = f"{ms:.3g}" + (f" ({eager / ms:.2f}×)" if eager and v != "eager" else "")
        rows.append(row)
    same = lambda k: _label(str(r.get(k)) for r in recs)
    runs = sorted({len(r["runs"]) for r in recs if isinstance(r.get("runs"), list)})
    title = (
        f"DefenseGAN's reconstruction (L = {same('L')}, R = {same('R')}, batch {same('batch')}) on "
        f"{same('device')}, torch {same('torch')}, compile backend {same('compile_backend')}: ms per image"
        + (f", the median of {'/'.join(map(str, runs))} timed calls" if runs else "")
        + "; in brackets the speed-up over eager"
    )
    return title, pd.DataFrame(rows)


def update(
    readme: Path,
    command: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    names: tuple[str, str],
    sources: dict[str, pd.DataFrame],
    recon: list[Path],
    block: str = "devices",
) -> Path:
    """Fill ``<!-- devices:start -->`` … ``<!-- devices:end -->`` of ``readme``."""
    parts = [
        "",
        f"_Generated by `{command}` from the folders' `runs/*/records.jsonl`"
        + (" and " + ", ".join(f"`{p.as_posix()}`" for p in recon) if recon else "")
        + "; do not edit by hand._",
        "",
    ]
    tables = timing(a, b, names)
    if not tables:
        parts += [f"_(no cell stored in both {names[0]} and {names[1]})_", ""]
    for title, t in tables:
        parts += [f"**{title}**", "", t.to_markdown(index=False, disable_numparse=True), ""]
    p = pairs(sources)
    if not p.empty:
        parts += [
            f"**{PAIR[0]} against {PAIR[1]}, defense wall-clock per image on the same attacked images, "
            "per device** (the ratio is the one comparable across devices)",
            "",
            p.to_markdown(index=False, disable_numparse=True),
            "",
        ]
    for path in recon:
        title, t = reconstruction(read_reconstruction(path))
        if not t.empty:
            parts += [f"**{title}**", "", t.to_markdown(index=False, disable_numparse=True), ""]
    return fill_block(readme, block, parts)
