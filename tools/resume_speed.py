"""A killed cell resumes from its finished batches: how much of an uninterrupted run's time the resume
costs, and whether it stores the same outcomes. Prints figures; tests never time anything.

Three runs of the same command, one after another on this machine, each into its own fresh results
folder: (1) uninterrupted, timed; (2) the same, killed with SIGKILL (the whole process group) once
``--at`` of (1)'s time has passed; (3) the same command again in (2)'s folder, timed: it takes back
the batches (2) finished and computes the rest. Then every stored cell of (3) is compared with (1)'s:
per-image outcomes, accuracies, max L∞, passes.

    python -m tools.resume_speed --defenses countergan-adaptive --attack pgd --threat white --limit 512
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.api import device_name, iter_records

COMPARED = (
    "correct",
    "adv_acc",
    "defended_adv_acc",
    "max_linf",
    "attack_forward_per_sample",
    "attack_backward_per_sample",
)


def command(a: argparse.Namespace, results: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench",
        "--offline",
        "--wandb",
        "disabled",
        "--results-dir",
        str(results),
        "--defenses",
        a.defenses,
        "--attack",
        a.attack,
        "--threat",
        a.threat,
        "--eps",
        a.eps,
        "--limit",
        str(a.limit),
        "--batch-size",
        str(a.batch_size),
    ]


def timed(cmd: list[str], kill_after: float | None = None) -> tuple[float, int]:
    """Run ``cmd`` (its output discarded); with ``kill_after``, SIGKILL it then. (seconds, exit code)"""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    try:
        rc = p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        rc = p.wait()
    return time.perf_counter() - t0, rc


def cells(results: Path) -> dict[str, dict]:
    return {r["cell_key"]: r for r in iter_records(results) if r.get("kind", "cell") == "cell" and r.get("cell_key")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.resume_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--defenses", default="countergan-adaptive")
    p.add_argument("--attack", default="pgd")
    p.add_argument("--threat", default="white")
    p.add_argument("--eps", default="0.3")
    p.add_argument("--limit", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--at", type=float, default=0.5, help="kill after this fraction of the uninterrupted time")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="resume-speed-") as tmp:
        whole, killed = Path(tmp) / "whole", Path(tmp) / "killed"
        t_whole, rc = timed(command(a, whole))
        if rc != 0:
            print(f"error: the uninterrupted run failed (exit {rc}): {' '.join(command(a, whole))}", file=sys.stderr)
            return 1
        t_kill, rc_kill = timed(command(a, killed), kill_after=a.at * t_whole)
        saved = sorted(q.name for q in killed.glob("partial/*/*.pt"))
        stored_before = len(cells(killed))
        t_resume, rc = timed(command(a, killed))
        ref, got = cells(whole), cells(killed)
        differ = sorted(k for k in ref if k not in got or any(ref[k].get(f) != got[k].get(f) for f in COMPARED))
    batches = -(-a.limit // a.batch_size)
    machine = ref[next(iter(ref))].get("cpu_model") if ref else None
    print(f"machine: {machine}, {device_name(torch.device('cpu'))}; {' '.join(command(a, Path('<results>'))[1:])}")
    print(f"uninterrupted: {t_whole:.1f} s")
    print(
        f"killed (SIGKILL) after {t_kill:.1f} s ({a.at:.2f} of it; exit {rc_kill}): {len(saved)} of {batches} "
        f"batch(es) per crafted cell saved, {stored_before} cell(s) stored"
    )
    print(f"resumed: {t_resume:.1f} s (exit {rc}) = {t_resume / t_whole:.2f} of the uninterrupted time")
    print(
        f"stored cells: {len(got)} vs {len(ref)}; identical outcomes, accuracies, max L∞ and passes: "
        + ("yes" if not differ and len(got) == len(ref) else f"NO ({len(differ)} differ)")
    )
    return 0 if not differ and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
