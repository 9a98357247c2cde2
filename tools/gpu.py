"""The GPU script (`make gpu`): an environment check, the plan, a packer.

What a lent GPU's minutes are spent on is data, not code: ``tools/gpu_plan.toml``, a grid file run by
the ordinary runner (``python -m bench grid tools/gpu_plan.toml --time-budget <seconds left>``): each
run step stores the cells it finished, keeps its finished batches and skips nothing it could
finish; what the budget cut is named in the log. This script only

  1. checks the environment (python, torch, CUDA, the device, the packages) and installs the carried
     pure-Python wheels (torchattacks, mlxtend) with ``pip install --no-deps --no-index`` into a
     folder on the children's PYTHONPATH when they are missing (the GPU machine has no network);
  2. runs the plan with the time left (the dry run: ``tools/gpu_plan_dry.toml``, the same kinds of
     step on CPU at toy sizes, as CI runs it);
  3. packs every results folder the plan wrote into ``<out>/gpu-results.tar.gz`` (``--out``, default
     ``$OUT``) *before* drawing their reports, then draws them and packs again: a report that fails
     costs the report, never the records. A tarball over the 16 MiB a GPU machine returns is packed
     again without the per-cell sample images and the plots.

    python -m tools.gpu --prepare             # here, with network: the wheels into wheels/
    python3 -m tools.gpu --out $OUT           # on the GPU machine, wheels/ carried along
    python -m tools.gpu --dry-run             # the same path on CPU with toy sizes (CI)

The benchmark runs as a subprocess (``python -m bench grid …``) with ``PYTHONPATH=<repo root>``: the
project is never pip-installed there. This parent process imports the standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any

from tools.gpu_io import child_env, kill_child, log, run, table

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "tools" / "gpu_plan.toml"
DRY_PLAN = ROOT / "tools" / "gpu_plan_dry.toml"
WHEELS = ("torchattacks==3.5.1", "mlxtend==0.25.0")  # pure Python; the GPU machine has neither
NEEDED = ("torchattacks", "mlxtend")  # import names the carried wheels provide
PACKAGES = ("torchvision", "numpy", "scipy", "pandas", "matplotlib", "tabulate", "torchattacks", "mlxtend", "wandb")
MAX_FILE = 16 * 1024 * 1024  # the GPU machine returns files of at most 16 MiB
REPORT_S = 60.0  # kept back from the plan for the reports and the packs


def results_dirs(plan: Path) -> list[Path]:
    """The results folders the plan's steps write into, in the plan's order (read from the file)."""
    steps = tomllib.loads(plan.read_text())["grid"]["steps"]
    out: list[Path] = []
    for s in steps:
        if "--results-dir" in s:
            d = ROOT / s[s.index("--results-dir") + 1]
            if d not in out:
                out.append(d)
    return out


# ---- 1. the environment -----------------------------------------------------------------------------
def install_wheels(missing: list[str], wheels: Path, site: Path) -> list[str]:
    """``pip install --no-deps --no-index`` the wheels in ``wheels`` that provide ``missing`` into
    ``site`` (a --target folder put on sys.path and the children's PYTHONPATH). Returns the files."""
    names = {m: re.compile(rf"^{re.escape(m)}-[^-]+-.*\.whl$", re.I) for m in missing}
    files = sorted(str(f) for f in wheels.glob("*.whl") if any(rx.match(f.name) for rx in names.values()))
    found = {m for m in missing if any(names[m].match(Path(f).name) for f in files)}
    if found != set(missing):
        raise RuntimeError(
            f"no wheel for {', '.join(sorted(set(missing) - found))} in {wheels}: run `make gpu-wheels` "
            "(python -m tools.gpu --prepare) where pip has network, and carry that folder"
        )
    site.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile"]
    cmd = [*pip, "--disable-pip-version-check", "--upgrade", "--target", str(site), *files]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"pip install failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-800:]}")
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return files


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_env(work: Path, wheels: Path, want_cuda: bool, force: bool = False) -> tuple[dict[str, Any], Path | None]:
    """The versions and the device (a table in the log, env.json in ``work``); installs the carried
    wheels when a needed package is missing. Raises RuntimeError when the plan cannot run here."""
    site = work / "site"
    missing = list(NEEDED) if force else [m for m in NEEDED if not _has(m)]
    installed: list[str] = []
    if missing:
        log(f"[gpu] missing {', '.join(missing)}: installing the carried wheels from {wheels}")
        installed = install_wheels(missing, wheels, site)
    elif not (site.is_dir() and any(site.iterdir())):
        site = None  # type: ignore[assignment]
    probe = (
        "import json, torch; c = torch.cuda.is_available(); p = torch.cuda.get_device_properties(0) if c else None; "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': c, "
        "'device_name': p.name if c else None, 'capability': f'{p.major}.{p.minor}' if c else None, "
        "'memory_gib': round(p.total_memory / 2**30, 1) if c else None, 'cudnn': torch.backends.cudnn.version() if c else None}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=child_env(site), timeout=120
    )
    if res.returncode:
        raise RuntimeError(f"torch does not load here: {res.stderr.strip()[-600:]}")
    info: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    info.update(
        python=platform.python_version(), host=platform.node(), installed_wheels=[Path(f).name for f in installed]
    )
    info["packages"] = {d: _version(d) for d in PACKAGES}
    if not info["available"]:
        info["device_name"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["nvidia_smi"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    rows = [["python", info["python"], sys.executable], ["torch", info["torch"], f"CUDA {info['cuda']}"]]
    rows += [
        [d, v, "installed from the carried wheel" if any(d in Path(f).name.lower() for f in installed) else ""]
        for d, v in info["packages"].items()
    ]
    rows += [
        [
            "device",
            info["device_name"],
            f"capability {info['capability']}, {info['memory_gib']} GiB" if info["available"] else "no CUDA",
        ]
    ]
    rows += [["nvidia-smi", info["nvidia_smi"], "driver, SM clock, max SM clock"]] if info["nvidia_smi"] else []
    log(table(["what", "version / value", "note"], rows))
    (work / "env.json").write_text(json.dumps(info, indent=2) + "\n")
    still = [m for m in NEEDED if not _has(m)]
    if still:
        raise RuntimeError(f"{', '.join(still)} still missing: the plan cannot run")
    if want_cuda and not info["available"]:
        raise RuntimeError("torch sees no CUDA device (use --dry-run on a CPU machine)")
    return info, site


# ---- 3. the pack -----------------------------------------------------------------------------------------
def pack(folders: list[Path], work: Path, out: Path) -> int:
    """<out>/gpu-results.tar.gz: the plan's results folders (without the scratch of unfinished cells)
    and the work folder's log and env.json. Over 16 MiB: again without samples/ and plots/."""
    size = _tar(folders, work, out, lean=False)
    if size > MAX_FILE:
        log(
            f"[gpu] the pack is {size / 2**20:.1f} MiB, over the 16 MiB a GPU machine returns: packed again without samples/ and plots/"
        )
        size = _tar(folders, work, out, lean=True)
    if size > MAX_FILE:
        log(f"[gpu] warning: the pack is still {size / 2**20:.1f} MiB")
    return size


def _tar(folders: list[Path], work: Path, out: Path, lean: bool) -> int:
    drop = {"partial", ".lock", "site"} | ({"samples", "plots"} if lean else set())

    def keep(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if drop & set(ti.name.split("/")) or ti.name.endswith(".lock") else ti

    tmp = out / ".gpu-results.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for f in folders:
            if f.is_dir():
                tar.add(f, arcname=f"gpu-results/{f.name}", filter=keep)
        for name in ("gpu.log", "env.json", "summary.json"):
            if (work / name).is_file():
                tar.add(work / name, arcname=f"gpu-results/{name}")
    os.replace(tmp, out / "gpu-results.tar.gz")
    return (out / "gpu-results.tar.gz").stat().st_size


def has_records(folder: Path) -> bool:
    return any(p.stat().st_size for p in folder.glob("runs/*/records.jsonl"))


# ---- the script ------------------------------------------------------------------------------------------
def run_all(a: argparse.Namespace) -> int:
    t0 = time.monotonic()
    plan = DRY_PLAN if a.dry_run else PLAN
    budget = a.budget if a.budget is not None else (900.0 if a.dry_run else 540.0)
    work = Path(a.work).resolve()
    out = Path(a.out).resolve() if a.out else work / "out"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log.add(work / "gpu.log")
    summary: dict[str, Any] = {
        "plan": str(plan.relative_to(ROOT)),
        "dry_run": a.dry_run,
        "budget_s": budget,
        "argv": sys.argv[1:],
    }
    folders = results_dirs(plan)
    signal.signal(signal.SIGTERM, lambda *_: (kill_child(), pack(folders, work, out), sys.exit(143)))
    log(
        f"[gpu] {'DRY RUN on CPU' if a.dry_run else 'GPU run'}: plan {summary['plan']}, budget {budget:.0f} s, out {out}"
    )
    try:
        info, site = check_env(work, Path(a.wheels), want_cuda=not a.dry_run, force=a.force_install)
        summary["device"] = info["device_name"]
    except (RuntimeError, subprocess.SubprocessError) as exc:
        log(f"[gpu] environment: {exc}")
        summary["env"] = f"failed: {exc}"
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        pack([], work, out)
        return 1
    left = budget - (time.monotonic() - t0) - REPORT_S
    cmd = [sys.executable, "-m", "bench", "grid", str(plan.relative_to(ROOT)), "--time-budget", f"{max(left, 1):.0f}"]
    rc, text, timed_out = run(cmd, child_env(site), max(left, 1) + 30)
    summary["plan_exit"] = rc
    summary["skipped"] = re.findall(r"\[grid\] (step \d+/\d+) skipped", text)
    summary["stopped"] = re.findall(r"\[budget\] (.*)", text)
    summary["timed_out"] = timed_out
    summary["plan_seconds"] = round(time.monotonic() - t0, 1)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    pack(folders, work, out)  # the records first: the reports below may fail
    drawn = []
    for f in folders:
        if has_records(f):
            seconds = max(budget - (time.monotonic() - t0), 20)
            r, _, _ = run([sys.executable, "-m", "bench", "report", "--results-dir", str(f)], child_env(site), seconds)
            drawn.append(f"{f.name}: {'ok' if r == 0 else f'exit {r}'}")
    summary["reports"] = drawn
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    size = pack(folders, work, out)
    log(
        f"[gpu] packed {size / 2**20:.1f} MiB into {out / 'gpu-results.tar.gz'}; plan exit {rc}; reports: {', '.join(drawn) or 'none'}"
    )
    return 0 if rc == 0 else 1


def prepare(wheels: Path) -> int:
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *WHEELS]
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc == 0:
        total = sum(f.stat().st_size for f in wheels.glob("*.whl"))
        print(f"[gpu] {total / 2**20:.1f} MiB of wheels in {wheels}: carry it with the GPU command", flush=True)
    return rc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tools/gpu_plan_dry.toml on CPU at toy sizes (CI)")
    p.add_argument("--prepare", action="store_true", help="download the wheels to carry (needs network) and exit")
    p.add_argument(
        "--out", default=os.environ.get("OUT"), help="where the tarball goes (default $OUT, else <work>/out)"
    )
    p.add_argument("--work", default=str(ROOT / "build" / "gpu-work"), help="log, env.json, installed wheels")
    p.add_argument("--wheels", default=str(ROOT / "wheels"), help="folder of carried wheels (default wheels/)")
    p.add_argument("--budget", type=float, help="seconds in all (default 540; dry run 900, a safety net)")
    p.add_argument("--force-install", action="store_true", help="install the carried wheels even when present")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.prepare:
        return prepare(Path(a.wheels))
    return run_all(a)


if __name__ == "__main__":
    sys.exit(main())
