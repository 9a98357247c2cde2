"""Do the default grid's numbers survive another instruction set? Prints the evidence (issue 33).

Runs the default grid (``bench.toml``: 1,000 MNIST images, FGSM 0.3 gray-box, every default defense,
shipped weights) four times as child processes, each into its own temporary folder:

  native   on this machine's instruction set           (every library picks its fastest kernels)
  native   as on an AVX2 machine                       (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2,
                                                         MKL_ENABLE_INSTRUCTIONS=AVX2)
  portable on this machine's instruction set           (--numerics portable)
  portable as on an AVX2 machine                       (the same three variables, then --numerics portable)

and compares every cell's four per-image outcome bitmaps between the two instruction sets of each
mode, and against the committed reference (``results/reference/default``, whose machine it names).
One CPU vendor cannot stand in for another here: what MKL does on another vendor's CPU is the part
``MKL_CBWR=COMPATIBLE`` is documented to fix and this script cannot show. Prints a markdown table
and each run's wall-clock; ``--readme docs/guides/reproducibility.md`` also fills its ``numerics`` block.

    python -m tools.numerics_evidence [--limit N] [--readme docs/guides/reproducibility.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_MACHINE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
RUNS = (
    ("native", "this CPU", {}),
    ("native", "AVX2", AVX2_MACHINE),
    ("portable", "this CPU", {}),
    ("portable", "AVX2", AVX2_MACHINE),
)
PORTABLE_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def records(folder: Path) -> dict[str, dict]:
    from bench.api import iter_records  # deferred: this process sets no numerics mode of its own

    out = {}
    for r in iter_records(folder):
        if r.kind == "cell":
            out[r["defense"]] = r
    return out


def differing(a: dict, b: dict) -> int:
    """Per-image outcomes (over the four bitmaps) that differ between two records of one cell."""
    n = int(a["n"])
    total = 0
    for k in ("clean", "adv", "defended_clean", "defended_adv"):
        x, y = int(a["correct"][k], 16), int(b["correct"][k], 16)
        total += bin(x ^ y).count("1") if n else 0
    return total


def run(mode: str, extra: dict[str, str], out: Path, limit: int | None) -> tuple[float, dict[str, dict]]:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_VARS}
    env.update(extra)
    cmd = [sys.executable, "-m", "bench", "--offline", "--numerics", mode, "--results-dir", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0, records(out)


def fmt(acc: float) -> str:
    return f"{acc:.3f}"


def table(results: list[tuple[str, str, float, dict]], ref: dict[str, dict], ref_machine: str) -> str:
    (_, _, _, nat), (_, _, _, nat2), (_, _, _, por), (_, _, _, por2) = results
    head = (
        "| defense | native, this CPU | native, AVX2 | images differing | portable, this CPU | portable, AVX2 "
        f"| images differing | reference ({ref_machine}) | portable vs reference |"
    )
    rows = [head, "|" + "---|" * 9]
    for d in sorted(nat):
        r = ref.get(d)
        rows.append(
            f"| {d} | {fmt(nat[d]['defended_adv_acc'])} | {fmt(nat2[d]['defended_adv_acc'])} "
            f"| {differing(nat[d], nat2[d])} | {fmt(por[d]['defended_adv_acc'])} "
            f"| {fmt(por2[d]['defended_adv_acc'])} | {differing(por[d], por2[d])} "
            f"| {fmt(r['defended_adv_acc']) if r else '—'} "
            f"| {differing(por[d], r) if r and r['n'] == por[d]['n'] else '—'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.numerics_evidence", description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, help="test images (default: the default grid's 1,000)")
    p.add_argument("--readme", help="fill the numerics block of this Markdown file (docs/guides/reproducibility.md)")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    results = []
    with tempfile.TemporaryDirectory(prefix="numerics-evidence-") as tmp:
        for i, (mode, isa, extra) in enumerate(RUNS):
            seconds, recs = run(mode, extra, Path(tmp) / f"r{i}", a.limit)
            any_rec = next(iter(recs.values()))
            print(
                f"[evidence] {mode:8s} {isa:8s}: {seconds:6.1f} s wall, ATen at {any_rec.get('cpu_capability')}, "
                f"numerics in force {any_rec.get('numerics')}, defensegan-fast "
                f"{recs['defensegan-fast']['defense_ms_per_sample']:.3g} ms/sample",
                flush=True,
            )
            results.append((mode, isa, seconds, recs))
    ref = records(ROOT / "results" / "reference" / "default")
    first = next(iter(ref.values()), {})
    ref_machine = f"{first.get('cpu_model', '?')}, {first.get('numerics') or 'native'}"
    here = next(iter(results[0][3].values()))
    text = table(results, ref, ref_machine)
    walls = ", ".join(f"{m} {i}: {s:.0f} s" for m, i, s, _ in results)
    caption = (
        f"_Generated by `python -m tools.numerics_evidence{' --limit ' + str(a.limit) if a.limit else ''} "
        f"--readme {a.readme or 'docs/guides/reproducibility.md'}` on {here.get('cpu_model')} ({here.get('cpu_vendor')}, "
        f"{here.get('torch_threads')} threads, {here.get('blas', '').split(';')[0]}); defended accuracy "
        f"under FGSM ε = 0.3, and how many per-image outcomes (of 4 × n) differ. Wall-clock per run, "
        f"same machine, one after another: {walls}._"
    )
    print(text)
    print(caption)
    if a.readme:
        from bench.api import fill  # deferred: this process sets no numerics mode of its own

        print(f"wrote {fill(Path(a.readme), 'numerics', ['', caption, '', text, ''])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
