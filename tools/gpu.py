"""GPU wall-clock per sample: one prepared script, run whenever a GPU is at hand (issue 11).

Steps, each with a time budget (a step whose budget is gone is skipped with a message; a
benchmark run that outlives its budget is interrupted, and the cells it finished stay stored):

  1   environment: python/torch/CUDA versions, the device; installs the carried wheels
      (torchattacks, mlxtend) with ``pip install --no-deps --no-index`` when they are missing
  aa  AutoAttack (``--attack aa-individual``: APGD-CE, APGD-T, FAB-T, Square 5,000, each its own cell) on 500
      images for every MNIST defense of the README headline, whose worst case today comes from 64
      images (issue 29): the threat-matrix-aa grid's 13 defenses, the adaptive grid's
      countergan-adaptive-long and ``none`` on mnist-cnn-pgdat, with that grid's settings (its
      grid.toml: eps 0.3, EOT 8, batch 256), so the cells are the grid's at a larger n and combine
      in the headline. The work comes in units (one ``python -m bench`` grid each, run in one
      worker process), planned by ``plan_aa`` without duplicate computations: a unit stores every
      threat model's cells that are one computation (white-box on a defense without gradients is
      BPDA; BPDA+EOT on a deterministic defense is BPDA; Square's white-box cell is its BPDA and
      BPDA+EOT cell; an identity defense (``none``) gives every threat model the gray-box
      examples: it runs white-box, and gray-box only where its classifier's gray-box unit crafts
      for other defenses anyway). Cells an earlier lease stored (``results/gpu/*/*/runs``, the same
      identities at the same n) are taken from the store, not computed again.
      Order: the defenses whose headline worst case is far from 0 (>= 0.05) first, then the rest;
      within each, white-box units, then BPDA, then BPDA+EOT where it is a computation of its own
      (a randomised defense), then gray-box (crafted once per classifier, scored on every defense);
      defenses by today's worst case, highest first. A budget cut therefore drops the least
      informative work. At the end the worker writes each defense's worst-over-all row over the
      threat models it completed (what the report and the headline combine).
  2   the default grid (bench.toml) on ``--device cuda`` into its own results folder; prints its
      table (defense ms/sample from CUDA events)
  3   DefenseGAN at L = 200, R = 10 and the counterGAN preset on 500 images in one run; their ratio
  4   DefenseGAN's reconstruction: eager vs torch.compile vs CUDA graphs, vs its floor (L steps of
      batched generator forward+backward over B·R latents), for the default generator's width and 64
  1b  trains DefenseGAN's reference-recipe generator (width 64, lr 1e-4) for ~4 minutes with
      ``python -m tools.defensegan_curve`` and keeps the checkpoint with its provenance
  5   if time remains: DefenseGAN (L = 200, R = 10) on 200 images under gray, bpda and bpda-eot,
      FGSM and PGD-40 at 0.3, as ordinary records

Step aa runs first after step 1 and takes most of the default 9-minute budget (450 s): what
matters most now; the timing steps follow with what is left, before 1b's training (which only
serves the DefenseGAN issue). ``--steps 1,2,3,4,1b,5`` runs the issue-11 steps alone (a second
lease), ``--steps 1,aa`` the AutoAttack step alone.
Everything goes into one work folder (``--work``: records, report, configs, log, summary.json),
packed after every step into ``<out>/gpu-results.tar.gz`` (``--out``, default ``$OUT``); the
trained generator (≈ 6 MB) is copied next to it. A tarball over the 16 MiB a GPU machine returns
is packed again without the per-cell sample images (``samples/``) and plots: the records are what
matter. At the end the records are merged and packed *before* the report is drawn, so a report
that fails (or hangs until its budget) costs the report, never the records or the pack. The
benchmark itself runs as subprocesses (``python -m bench …``, or step aa's worker, ``python -m
tools.gpu --aa-worker``) with ``PYTHONPATH=<repo root>``: the project is never pip-installed there.

    python -m tools.gpu --prepare             # here, with network: the wheels into wheels/
    python3 -m tools.gpu --out $OUT           # on the GPU machine, wheels/ carried along
    python -m tools.gpu --dry-run             # the same steps on CPU with tiny sizes (CI)

Plumbing (log, child processes, TOML, record tables) is in ``gpu_io.py``; step 4's worker process
in ``gpu_reconstruction.py``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Standard library only, like this file: the parent process imports nothing heavy.
from tools import gpu_io
from tools.gpu_io import _signal, child_env, dump_toml, log, pick, record_table, run, table
from tools.gpu_reconstruction import step4_worker

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ("torchattacks==3.5.1", "mlxtend==0.25.0")  # pure Python; the GPU machine has neither
NEEDED = ("torchattacks", "mlxtend")  # import names the carried wheels provide
STEP_ORDER = ("1", "aa", "2", "3", "4", "1b", "5")
TITLES = {
    "1": "environment and carried wheels",
    "1b": "DefenseGAN reference-recipe generator (train, keep)",
    "aa": "AutoAttack on the headline's MNIST defenses, more images",
    "2": "default grid on the device",
    "3": "DefenseGAN L·R vs counterGAN preset",
    "4": "DefenseGAN reconstruction: eager vs compile vs CUDA graphs vs floor",
    "5": "DefenseGAN threat matrix",
}
MAX_FILE = 16 * 1024 * 1024  # the GPU machine returns files of at most 16 MiB

# Sizes: the GPU run and the CPU dry run differ only here.
FULL = {
    "device": "cuda",
    "budget": 540.0,
    "reserve": 15.0,
    "caps": {"1": 60, "aa": 450, "2": 150, "3": 90, "4": 150, "1b": 250, "5": 600},
    "limit2": None,
    "limit3": 500,
    "L": 200,
    "R": 10,
    "batch4": 256,
    "repeats4": 5,
    "widths4": "0,64",
    "limit5": 200,
    "pgd_steps": 40,
    "eot": 8,
    "limit_aa": 500,
    "aa_attacks": {},
    "aa_last": {},
    "aa_reserve": 30.0,
    "train_width": 64,
    "train_lr": 1e-4,
    "train_batch": 50,
    "train_seconds": 210.0,
    "train_iterations": 0,
}
# The dry run's budgets are safety nets only (generous: CI's 2 cores may be busy).
DRY = {
    "device": "cpu",
    "budget": 900.0,
    "reserve": 5.0,
    "caps": {"1": 60, "aa": 400, "2": 240, "3": 120, "4": 120, "1b": 120, "5": 240},
    "limit2": 16,
    "limit3": 16,
    "L": 5,
    "R": 2,
    "batch4": 8,
    "repeats4": 2,
    "widths4": "8",
    "limit5": 8,
    "pgd_steps": 2,
    "eot": 2,
    "limit_aa": 8,
    "aa_reserve": 60.0,
    "aa_last": {"defensegan-L10-R1": {"L": 2, "R": 1}},
    "aa_attacks": {
        "aa-apgd-ce": {"steps": 2},
        "aa-apgd-t": {"steps": 2},
        "aa-fab-t": {"steps": 2},
        "aa-square": {"n_queries": 10},
    },
    "train_width": 8,
    "train_lr": 1e-4,
    "train_batch": 16,
    "train_seconds": 30.0,
    "train_iterations": 2,
}
# Tiny training/inference for the dry run, per plugin family (as the plugins' own test_params).
TINY = {
    "countergan": {"iterations": 4, "batch_size": 64},
    "defensegan": {"iterations": 3, "L": 5, "R": 2, "width": 8, "batch_size": 16, "pretrained": ""},
}


# ---- the run ---------------------------------------------------------------------------------------
class Ctx:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.dry = a.dry_run
        self.s = dict(DRY if self.dry else FULL)
        if a.budget is not None:
            self.s["budget"] = a.budget
        if a.train_seconds is not None:
            self.s["train_seconds"] = a.train_seconds
        self.device = a.device or self.s["device"]
        self.work = Path(a.work or (ROOT / "build" / ("gpu-dry" if self.dry else "gpu-run"))).resolve()
        self.out = Path(a.out).resolve() if a.out else self.work / "out"
        self.results = self.work / "results"
        self.cache = self.work / "cache"
        self.site: Path | None = None
        self.py = sys.executable
        self.t0 = time.perf_counter()
        self.summary: dict[str, Any] = {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dry_run": self.dry,
            "device_requested": self.device,
            "budget_s": self.s["budget"],
            "argv": sys.argv[1:],
            "steps": {},
        }
        self.base = tomllib.loads((ROOT / "bench.toml").read_text()) if (ROOT / "bench.toml").is_file() else {}
        self.abort = False
        self.seeded: set[str] = set()  # run ids copied in from the repository (results/gpu): not packed

    def left(self) -> float:
        return self.s["budget"] - (time.perf_counter() - self.t0) - self.s["reserve"]

    def env(self) -> dict[str, str]:
        return child_env(self.site)

    def config(
        self,
        name: str,
        grid: list[str],
        over: dict[str, dict[str, Any]] | None = None,
        attacks: dict[str, dict[str, Any]] | None = None,
        base: dict[str, Any] | None = None,
        base_name: str = "bench.toml",
        last: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        """bench.toml (or ``base``, another config's tables) with per-step overrides (and, in the dry
        run, tiny sizes for ``grid``; ``last`` overrides those)."""
        doc = copy.deepcopy(self.base if base is None else base)
        dfs = doc.setdefault("defenses", {})
        for d, params in (over or {}).items():
            dfs.setdefault(d, {}).update(params)
        if self.dry:
            doc.setdefault("classifier", {}).update(epochs=1)
            for d in grid:
                plugin = dfs.get(d, {}).get("plugin", d)
                family = next((f for f in TINY if plugin.startswith(f)), None)
                if family:
                    dfs.setdefault(d, {}).update(TINY[family])
        for d, params in (last or {}).items():
            dfs.setdefault(d, {}).update(params)
        for at, params in (attacks or {}).items():
            doc.setdefault("attacks", {}).setdefault(at, {}).update(params)
        if not dfs:
            doc.pop("defenses")
        path = self.work / "configs" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# written by tools.gpu for {name}: {base_name} plus this step's settings\n" + dump_toml(doc))
        return path

    def plugin(self, name: str) -> str:
        return self.base.get("defenses", {}).get(name, {}).get("plugin", name)

    def step_results(self, name: str) -> Path:
        """Each benchmark step stores into its own folder (the run's report then plots only its own
        cells); ``merge`` copies every run into ``results/`` for the one final report."""
        return self.work / "steps" / name

    def bench_args(self, cfg: Path, results: Path) -> list[str]:
        args = [
            self.py,
            "-m",
            "bench",
            "--config",
            str(cfg),
            "--device",
            self.device,
            "--results-dir",
            str(results),
            "--cache-dir",
            str(self.cache),
            "--offline",
            "--wandb",
            "disabled",
        ]
        if self.dry:  # an untrained classifier: the dry run checks the path, not accuracy
            args += ["--classifier-weights", str(self.dry_classifier()), "--batch-size", "16"]
        return args

    def dry_classifier(self) -> Path:
        path = self.work / "dry-classifier.pt"
        if not path.is_file():
            import torch

            from bench.builtin.classifiers import make_classifier
            from bench.builtin.data import MNIST

            torch.manual_seed(0)
            torch.save(make_classifier("mnist-cnn", MNIST()).state_dict(), path)
        return path

    # ---- packing ----
    def _keep(self, ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = ti.name.split("/")  # gpu-results/steps/<step>/runs/<id>/…: kept once, under results/
        if ti.name.endswith(".lock") or (
            len(parts) >= 5
            and parts[1] == "steps"
            and parts[3] == "runs"
            and (self.results / "runs" / parts[4]).is_dir()
        ):
            return None
        if any(a == "runs" and b in self.seeded for a, b in zip(parts, parts[1:])):
            return None  # an earlier lease's run, copied in from the repository
        return ti

    def pack(self) -> None:
        """<out>/gpu-results.tar.gz: everything in the work folder but caches and checkpoints. Over the
        16 MiB a GPU machine returns, packed again without the per-cell sample images and the plots
        (the report's pictures; the records are what matter)."""
        self.summary["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self._summary()
        size = self._tar()
        if size > MAX_FILE:
            log(
                f"[gpu] gpu-results.tar.gz is {size / 2**20:.1f} MiB, over the 16 MiB a GPU machine returns: "
                "packed again without samples/ and plots/ (every record is kept)"
            )
            self.summary["packed_without"] = ["samples", "plots"]
            self._summary()
            size = self._tar(lean=True)
        if size > MAX_FILE:
            log(
                f"[gpu] warning: gpu-results.tar.gz is still {size / 2**20:.1f} MiB, over the 16 MiB a GPU "
                "machine returns"
            )

    def _summary(self) -> None:
        (self.work / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        shutil.copy2(self.work / "summary.json", self.out / "summary.json")

    def _tar(self, lean: bool = False) -> int:
        skip = {"cache", "defensegan-curve", "out", "site", "shipped"}
        tmp = self.out / ".gpu-results.tar.gz.tmp"

        def keep(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if lean and ({"samples", "plots"} & set(ti.name.split("/")[2:])):
                return None
            return self._keep(ti)

        with tarfile.open(tmp, "w:gz") as tar:
            for p in sorted(self.work.iterdir()):
                if p.name in skip or p.name.endswith(".pt") or p.resolve() == self.out:
                    continue
                tar.add(p, arcname=f"gpu-results/{p.name}", filter=keep)
        os.replace(tmp, self.out / "gpu-results.tar.gz")
        return (self.out / "gpu-results.tar.gz").stat().st_size

    def safe_pack(self) -> None:
        """``pack``, whose failure is logged, never raised: the tarball of the last pack stays."""
        try:
            self.pack()
        except Exception as exc:  # noqa: BLE001
            log(f"[gpu] packing failed: {type(exc).__name__}: {exc} (the previous tarball stays)")


# ---- step 1 -------------------------------------------------------------------------------------
def install_wheels(missing: list[str], wheels: Path, site: Path) -> list[str]:
    """``pip install --no-deps --no-index`` the wheels in ``wheels`` that provide ``missing`` into
    ``site`` (a --target folder put on sys.path and the subprocesses' PYTHONPATH). Returns the files."""
    names = {m: re.compile(rf"^{re.escape(m)}-[^-]+-.*\.whl$", re.I) for m in missing}
    files = (
        sorted(str(f) for f in wheels.glob("*.whl") if any(rx.match(f.name) for rx in names.values()))
        if wheels.is_dir()
        else []
    )
    found = {m for m in missing if any(names[m].match(Path(f).name) for f in files)}
    if found != set(missing):
        raise RuntimeError(
            f"no wheel for {', '.join(sorted(set(missing) - found))} in {wheels}: run "
            "`make gpu-wheels` (python -m tools.gpu --prepare) where pip has network, "
            "and carry that folder"
        )
    site.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--no-compile",
        "--disable-pip-version-check",
        "--upgrade",
        "--target",
        str(site),
        *files,
    ]
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


def step_env(ctx: Ctx, budget: float) -> dict[str, Any]:
    site = ctx.work / "site"
    if site.is_dir() and any(site.iterdir()):  # installed by an earlier try on this machine
        sys.path.insert(0, str(site))
        ctx.site = site
        importlib.invalidate_caches()
    missing = [m for m in NEEDED if not _has(m)]
    if ctx.a.force_install:
        missing = list(NEEDED)
    installed: list[str] = []
    if missing:
        log(f"[gpu] missing {', '.join(missing)}: installing the carried wheels from {ctx.a.wheels}")
        installed = install_wheels(missing, Path(ctx.a.wheels), site)
        ctx.site = site
        for f in installed:
            log(f"[gpu] installed {Path(f).name} into {site}")
    import torch

    cuda = torch.cuda.is_available()
    rows = [
        ["python", platform.python_version(), sys.executable],
        ["torch", torch.__version__, ""],
        ["torch CUDA", torch.version.cuda, f"available: {cuda}"],
        ["cuDNN", torch.backends.cudnn.version() if cuda else None, ""],
    ]
    for dist in (
        "torchvision",
        "numpy",
        "scipy",
        "pandas",
        "matplotlib",
        "tqdm",
        "tabulate",
        "torchattacks",
        "mlxtend",
        "wandb",
    ):
        rows.append(
            [
                dist,
                _version(dist),
                "installed here from the carried wheel"
                if any(Path(f).name.lower().startswith(dist) for f in installed)
                else ("optional" if dist == "wandb" else ""),
            ]
        )
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "packages": {r[0]: r[1] for r in rows[4:]},
        "installed_wheels": [Path(f).name for f in installed],
        "host": platform.node(),
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(
            device_name=p.name,
            capability=f"{p.major}.{p.minor}",
            memory_gib=round(p.total_memory / 2**30, 1),
            multiprocessors=p.multi_processor_count,
            device_count=torch.cuda.device_count(),
        )
        rows += [
            [
                "device",
                p.name,
                f"capability {p.major}.{p.minor}, {info['memory_gib']} GiB, "
                f"{p.multi_processor_count} SMs, {info['device_count']} device(s)",
            ]
        ]
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = smi.stdout.strip()
            rows.append(["nvidia-smi", smi.stdout.strip(), "driver, SM clock, max SM clock"])
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        info["device_name"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
        rows.append(["device", info["device_name"], "no CUDA"])
    ctx.summary["device"] = info["device_name"]
    ctx.summary["env"] = info
    (ctx.work / "env.json").write_text(json.dumps(info, indent=2) + "\n")
    log(table(["what", "version / value", "note"], rows))
    still = [m for m in NEEDED if not _has(m)]
    if still:
        raise RuntimeError(f"{', '.join(still)} still missing: the benchmark steps cannot run")
    if ctx.device.startswith("cuda") and not cuda:
        ctx.abort = True
        raise RuntimeError("--device cuda but torch sees no CUDA device (use --dry-run on a CPU machine)")
    return {"status": "ok", "device": info["device_name"]}


# ---- step aa: AutoAttack on the headline's MNIST defenses, more images (issue 29) ------------------
AA_GRID = ROOT / "results" / "reference" / "threat-matrix-aa" / "grid.toml"  # its settings are the step's
AA_PRIOR = ROOT / "results" / "gpu"  # earlier leases' records: the cells they hold are not computed again
AA_EPS = 0.3
AA_COMPONENTS = ("aa-apgd-ce", "aa-apgd-t", "aa-fab-t", "aa-square")  # the `aa` suite (attacks/aa_component.py)
AA_GRADIENT_FREE = ("aa-square",)  # one cell for white-box, BPDA and BPDA+EOT (bench.core.threats.Threat.query)
AA_OPEN = 0.05  # a headline worst case at least this far from 0 is still open: its units come first
# The README headline's MNIST rows at eps 0.3 (commit 4c36475), (classifier, defense) → (the worst case over
# every attack and threat model on the 64 images AutoAttack ran on, the worst over FGSM and PGD-40 on 500).
# `none` on mnist-cnn-pgdat never met AutoAttack: both are FGSM/PGD's on 500 images.
AA_HEADLINE: dict[tuple[str, str], tuple[float, float]] = {
    ("mnist-cnn-pgdat", "none"): (0.848, 0.848),
    ("mnist-cnn", "bitdepth"): (0.828, 0.772),
    ("mnist-cnn", "countergan-adaptive-long"): (0.750, 0.794),
    ("mnist-cnn", "countergan-adaptive"): (0.625, 0.664),
    ("mnist-cnn", "defensegan-L10-R1"): (0.078, 0.144),
    ("mnist-cnn", "countergan-conv-bce"): (0.016, 0.026),
    ("mnist-cnn", "countergan-conv-mse"): (0.016, 0.030),
    ("mnist-cnn", "countergan"): (0.0, 0.0),
    ("mnist-cnn", "countergan-linear-bce"): (0.0, 0.088),
    ("mnist-cnn", "countergan-linear-mse"): (0.0, 0.082),
    ("mnist-cnn", "countergan-linear-wgangp"): (0.0, 0.038),
    ("mnist-cnn", "gaussian"): (0.0, 0.006),
    ("mnist-cnn", "jpeg"): (0.0, 0.002),
    ("mnist-cnn", "median"): (0.0, 0.006),
    ("mnist-cnn", "none"): (0.0, 0.002),
}
# What makes threat models one computation (tests/test_gpu_script.py checks these against the plugins):
# "identity" (``identity = True``: every threat model attacks the bare classifier), "no-gradient"
# (``differentiable = False``: white-box is BPDA), "randomized" (BPDA+EOT draws); neither: deterministic.
AA_KIND: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "bitdepth": ("no-gradient",),
    "jpeg": ("no-gradient",),
    "gaussian": ("randomized",),
    "defensegan-L10-R1": ("randomized",),
}
AA_TIERS = ("white", "bpda", "bpda-eot", "gray")


def plan_aa(
    headline: dict[tuple[str, str], tuple[float, float]] | None = None,
    kinds: dict[str, tuple[str, ...]] | None = None,
    open_at: float = AA_OPEN,
) -> list[dict[str, Any]]:
    """Step aa's units, in the order they run: each one ``python -m bench`` grid (a classifier, its
    defenses, the threat models whose cells it stores, ``--attack aa-individual``). No computation twice:

    * white-box on a defense without gradients is BPDA, and BPDA+EOT on a deterministic defense is
      BPDA: those threat models ride in one unit, where the runner crafts once and stores each cell;
    * Square's white-box cell is its BPDA and BPDA+EOT cell (the white-box unit stores it first);
    * an identity defense (``none``) gives every threat model the bare classifier's examples: it runs
      white-box only, and is scored in its classifier's gray-box unit where other defenses have one;
    * gray-box examples are crafted once per classifier and unit, and scored on every defense in it.

    Order, so that a budget cut drops the least informative work: the defenses whose headline worst
    case is >= ``open_at`` first, then the rest; within each, white-box units, BPDA, BPDA+EOT (its own
    computation only on a randomised defense), gray-box; defenses by the headline's worst case, then
    its 500-image FGSM/PGD figure, highest first."""
    from bench.core.threats import Threat  # deferred: see gpu_io.records

    headline = AA_HEADLINE if headline is None else headline
    kinds = AA_KIND if kinds is None else kinds
    order = sorted(headline, key=lambda k: (-headline[k][0], -headline[k][1], k))
    units: list[dict[str, Any]] = []
    for group, members in (
        ("open", [k for k in order if headline[k][0] >= open_at]),
        ("rest", [k for k in order if headline[k][0] < open_at]),
    ):
        tiers: dict[str, list[dict[str, Any]]] = {t: [] for t in AA_TIERS}
        gray: dict[str, list[str]] = {}

        def add(tier: str, clf: str, defenses: list[str], threats: list[str], why: str) -> None:
            tiers[tier].append(
                {"group": group, "tier": tier, "classifier": clf, "defenses": defenses, "threats": threats, "why": why}
            )

        for clf, d in members:
            f = kinds.get(d, ())
            if "identity" in f:
                # Its gray-box cell costs only scoring where its classifier's gray-box unit runs anyway.
                shared = any(c == clf and "identity" not in kinds.get(e, ()) for c, e in members)
                add(
                    "white",
                    clf,
                    [d],
                    ["white"],
                    "identity defense: every threat model attacks the bare "
                    "classifier; BPDA and BPDA+EOT would repeat it, and so would gray-box"
                    + (" (scored in the gray-box unit, crafted there anyway)" if shared else ""),
                )
                if shared:
                    gray.setdefault(clf, []).append(d)
                continue
            white = ["white"]
            if "no-gradient" in f:
                white += ["bpda"] if "randomized" in f else ["bpda", "bpda-eot"]
            add(
                "white",
                clf,
                [d],
                white,
                "white-box is BPDA (no gradients)"
                + (", BPDA+EOT is BPDA (deterministic): crafted once" if any(Threat(t).is_eot for t in white) else "")
                if len(white) > 1
                else "end to end; Square's cell here is also its BPDA and BPDA+EOT cell",
            )
            if "bpda" not in white:
                add(
                    "bpda",
                    clf,
                    [d],
                    ["bpda"] if "randomized" in f else ["bpda", "bpda-eot"],
                    "randomised: BPDA+EOT is its own unit"
                    if "randomized" in f
                    else "BPDA+EOT is BPDA (deterministic): crafted once",
                )
            if "randomized" in f:
                add("bpda-eot", clf, [d], ["bpda-eot"], "EOT draws per gradient")
            gray.setdefault(clf, []).append(d)
        for clf, ds in gray.items():
            add("gray", clf, ds, ["gray"], "crafted once on the bare classifier, scored on every defense")
        units += [u for t in AA_TIERS for u in tiers[t]]
    for i, u in enumerate(units, 1):
        u["id"] = i
    return units


def aa_pairs(units: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The (classifier, defense, threat) pairs the units store AutoAttack cells for, in plan order."""
    return list(dict.fromkeys((u["classifier"], d, t) for u in units for d in u["defenses"] for t in u["threats"]))


def aa_stored_as(threat: str) -> dict[str, str]:
    """Each AutoAttack component → the threat its cell for ``threat`` is stored under."""
    from bench.core.threats import Threat  # deferred: see gpu_io.records

    return {
        c: "white" if c in AA_GRADIENT_FREE and Threat(threat).same_outputs_as_white else threat for c in AA_COMPONENTS
    }


def aa_cells(recs: list[dict[str, Any]], limit: int, eps: float = AA_EPS) -> dict[tuple[str, str, str, str], dict]:
    """The latest stored AutoAttack component cell per (classifier, defense, threat, component)."""
    out: dict[tuple[str, str, str, str], dict] = {}
    for r in recs:
        # individual-mode cells only: a cascade stage (``cascade`` set) ran on a subset of the images
        if (
            r.get("kind") != "worst"
            and r.get("attack") in AA_COMPONENTS
            and r.get("limit") == limit
            and not r.get("cascade")
            and r.get("eps") is not None
            and abs(float(r["eps"]) - eps) < 1e-9
        ):
            k = (r.get("classifier"), r["defense"], r["threat"], r["attack"])
            if k not in out or r.get("time", 0) >= out[k].get("time", 0):
                out[k] = r
    return out


def aa_complete(cells: dict[tuple[str, str, str, str], dict], clf: str, defense: str, threat: str) -> bool:
    """Whether every component's cell of (classifier, defense, threat) is stored."""
    return all((clf, defense, t, c) in cells for c, t in aa_stored_as(threat).items())


def aa_worker(a: argparse.Namespace) -> int:
    """Step aa's worker: runs the units of ``a.aa_worker`` (a JSON job) in this one process (one torch
    import, one CUDA context), each as ``python -m bench`` would run it, until ``a.seconds`` less the
    job's reserve, then writes the worst-over-all rows over what each defense completed. A unit that
    reaches that deadline is interrupted (its finished cells stay stored); a SIGINT from the script
    stops everything. One JSON line per unit in the job's ``log``."""
    job = json.loads(Path(a.aa_worker).read_text())
    # The numerics mode first, as `python -m bench` sets it: its settings count only before torch loads.
    from bench.cli.numerics import mode_for
    from bench.core import numerics

    mode = mode_for("run", job["args"])
    if mode in numerics.MODES:
        numerics.apply(mode)
    from bench.cli.parser import run_parser
    from bench.core.config import resolve
    from bench.run.driver import Runner
    from bench.store.provenance import cli_command

    t0 = time.perf_counter()
    hard = t0 + a.seconds
    soft = hard - job["reserve"]
    sink = open(job["log"], "a", encoding="utf-8")

    class Deadline(KeyboardInterrupt):
        """The worker's own budget ran out (a KeyboardInterrupt, as bench's Ctrl-C)."""

    def on_alarm(*_: Any) -> None:
        raise Deadline()

    signal.signal(signal.SIGALRM, on_alarm)

    def grid(argv: list[str], until: float) -> tuple[str, int, int]:
        args = vars(run_parser().parse_args(argv))
        config = args.pop("config")
        args.pop("debug")
        with Runner(resolve(args, config), cli_command(argv)) as r:
            status = "ok"
            signal.setitimer(signal.ITIMER_REAL, max(until - time.perf_counter(), 0.001))
            try:
                r.run()
            except Deadline:
                status = "interrupted (budget)"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            return status, r.writer.count, len(r.reused)

    def emit(row: dict[str, Any]) -> None:
        sink.write(json.dumps(row) + "\n")
        sink.flush()

    def argv(clf: str, defenses: list[str], threats: list[str]) -> list[str]:
        return [
            *job["args"],
            "--classifier",
            clf,
            "--defenses",
            ",".join(defenses),
            "--attack",
            job["attack"],
            "--eps",
            f"{job['eps']:g}",
            "--threat",
            ",".join(threats),
            "--limit",
            str(job["limit"]),
        ]

    def attempt(row: dict[str, Any], cmd: list[str], until: float) -> None:
        t = time.perf_counter()
        try:
            row["status"], row["computed"], row["reused"] = grid(cmd, until)
        except Deadline:
            row["status"] = "interrupted (budget)"
        except KeyboardInterrupt:
            row.update(status="interrupted (the script's budget)", seconds=round(time.perf_counter() - t, 1))
            emit(row)
            raise
        except Exception as exc:  # noqa: BLE001  (one unit's failure must not cost the others)
            row["status"] = f"failed: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - t, 1)
        emit(row)

    units = job["units"]
    try:
        for u in units:
            row = {
                "unit": u["id"],
                "tier": u["tier"],
                "classifier": u["classifier"],
                "defenses": u["defenses"],
                "threats": u["threats"],
            }
            head = (
                f"[aa] unit {u['id']}/{len(units)} ({u['group']}, {u['tier']}): {u['classifier']} "
                f"{','.join(u['defenses'])} under {','.join(u['threats'])}"
            )
            if soft - time.perf_counter() < job["min_unit"]:
                row.update(status="skipped (budget)", seconds=0.0)
                emit(row)
                print(f"{head}: skipped, the budget is gone", flush=True)
                continue
            print(f"{head} ({u['why']})", flush=True)
            attempt(row, argv(u["classifier"], u["defenses"], u["threats"]), soft)
            print(
                f"{head}: {row['status']}, {row.get('computed', '?')} cell(s) computed, "
                f"{row.get('reused', '?')} taken from the store, {row['seconds']:.1f} s",
                flush=True,
            )
        # The worst-over-all rows (what the headline reads) over the threat models each defense completed.
        from bench.store.runs import iter_records

        cells = aa_cells(list(iter_records(Path(job["results"]))), job["limit"], job["eps"])
        done: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for clf, d in dict.fromkeys((u["classifier"], d) for u in units for d in u["defenses"]):
            threats = tuple(t for t in AA_TIERS if aa_complete(cells, clf, d, t))
            if len(threats) >= 2:
                done.setdefault((clf, threats), []).append(d)
        for (clf, threats), ds in done.items():
            row = {"unit": "worst", "classifier": clf, "defenses": ds, "threats": list(threats)}
            if hard - time.perf_counter() < 3:
                row.update(status="skipped (budget)", seconds=0.0)
                emit(row)
                continue
            attempt(row, argv(clf, ds, list(threats)), hard - 1)
            print(
                f"[aa] worst-over-all rows of {clf} {','.join(ds)} over {','.join(threats)}: {row['status']}",
                flush=True,
            )
    except KeyboardInterrupt:
        print("[aa] interrupted by the script: the finished cells stay stored", flush=True)
        return 130
    return 0


def aa_seed(results: Path, limit: int, prior: Path | None = None) -> list[str]:
    """Copy the runs of earlier GPU leases (``results/gpu/<lease>/<folder>/runs/<id>``, committed) that
    hold AutoAttack cells on ``limit`` images into ``results``: the runner takes every cell whose
    identity they hold from the store instead of computing it again. Returns the run ids (the pack
    leaves them out: they are in the repository)."""
    prior = AA_PRIOR if prior is None else prior
    seeded = []
    for run_dir in sorted(prior.glob("*/*/runs/*")):
        recs = gpu_io.records(run_dir.parent.parent, [run_dir.name])
        if any(r.get("attack") in AA_COMPONENTS and r.get("limit") == limit for r in recs):
            dest = results / "runs" / run_dir.name
            if not dest.exists():
                shutil.copytree(run_dir, dest)
            seeded.append(run_dir.name)
    return seeded


def aa_config(ctx: Ctx, defenses: list[str]) -> Path:
    """The threat-matrix-aa grid's configuration (its [run] settings, classifier recipe, named defenses),
    with countergan-adaptive-long's table from bench.toml (the adaptive grid's) and, in the dry run,
    tiny defenses and AutoAttack budgets."""
    grid = tomllib.loads(AA_GRID.read_text())
    grid.pop("grid", None)
    grid.get("run", {}).pop("results_dir", None)
    over = {
        d: ctx.base["defenses"][d]
        for d in defenses
        if d not in grid.get("defenses", {}) and d in ctx.base.get("defenses", {})
    }
    return ctx.config(
        "stepaa-autoattack",
        defenses,
        over,
        ctx.s["aa_attacks"],
        base=grid,
        base_name=f"{AA_GRID.relative_to(ROOT)} (the command line sets its grid)",
        last=ctx.s["aa_last"],
    )


def step_aa(ctx: Ctx, budget: float) -> dict[str, Any]:
    from bench.core.threats import Threat, over_all  # deferred: see gpu_io.records

    units = plan_aa()
    limit = ctx.s["limit_aa"]
    defenses = list(dict.fromkeys(d for u in units for d in u["defenses"]))
    cfg = aa_config(ctx, defenses)
    results = ctx.step_results("stepaa-autoattack")
    unit_log = ctx.work / "stepaa-units.jsonl"
    unit_log.unlink(missing_ok=True)
    seeded = aa_seed(results, limit)
    ctx.seeded.update(seeded)
    if seeded:
        log(
            f"[step aa] {len(seeded)} run(s) of earlier leases under {AA_PRIOR.relative_to(ROOT)} hold AutoAttack "
            f"cells on {limit} images ({', '.join(seeded)}): copied into the step's results folder, so the cells "
            "they hold are taken from the store, not computed again (and not packed: they are in the repository)"
        )
        held = aa_cells(gpu_io.records(results), limit)
        for clf, d, t in aa_pairs(units):
            have = [c for c, th in aa_stored_as(t).items() if (clf, d, th, c) in held]
            if have and not Threat(t).same_outputs_as_white or len(have) > 1:
                log(
                    f"[step aa]   {clf} {d} {t}: "
                    + ("all four components stored" if len(have) == len(AA_COMPONENTS) else f"{', '.join(have)} stored")
                )
    reserve = min(ctx.s["aa_reserve"], budget / 4)
    args = ctx.bench_args(cfg, results)[3:] + (["--eot-samples", str(ctx.s["eot"])] if ctx.dry else [])
    job = {
        "args": args,
        "results": str(results),
        "limit": limit,
        "eps": AA_EPS,
        "attack": ctx.a.aa_attack,
        "units": units,
        "reserve": reserve,
        "min_unit": 5.0,
        "log": str(unit_log),
    }
    job_path = ctx.work / "configs" / "stepaa-job.json"
    job_path.write_text(json.dumps(job, indent=2) + "\n")
    log(
        f"[step aa] {len(units)} units, {len(aa_pairs(units))} (classifier, defense, threat) pairs, {limit} images, "
        f"--attack {ctx.a.aa_attack} at eps {AA_EPS:g} with {AA_GRID.relative_to(ROOT)}'s settings"
        + (f" and the dry run's budgets {ctx.s['aa_attacks']}" if ctx.s["aa_attacks"] else "")
        + ":"
    )
    log(
        table(
            ["#", "group", "tier", "classifier", "defenses", "threats stored", "why"],
            [
                [
                    u["id"],
                    u["group"],
                    u["tier"],
                    u["classifier"],
                    ", ".join(u["defenses"]),
                    ", ".join(u["threats"]),
                    u["why"],
                ]
                for u in units
            ],
        )
    )
    cmd = [ctx.py, "-m", "tools.gpu", "--aa-worker", str(job_path), "--seconds", f"{max(budget - 3, 1):.0f}"]
    rc, out, timed_out = run(cmd, ctx.env(), budget)
    rows = gpu_io.read_jsonl(unit_log) if unit_log.is_file() else []
    ran = {r["unit"]: r for r in rows}
    log("[step aa] units:")
    log(
        table(
            ["#", "tier", "classifier", "defenses", "threats", "status", "seconds", "computed", "reused"],
            [
                [
                    r["unit"],
                    r.get("tier", "worst rows"),
                    r["classifier"],
                    ", ".join(r["defenses"]),
                    ", ".join(r["threats"]),
                    r["status"],
                    r.get("seconds"),
                    r.get("computed"),
                    r.get("reused"),
                ]
                for r in rows
            ],
        )
    )
    recs = gpu_io.records(results)
    cells = aa_cells(recs, limit)
    pairs = aa_pairs(units)
    covered = [p for p in pairs if aa_complete(cells, *p)]
    per_defense = []
    worst: dict[str, Any] = {}
    for clf, d in dict.fromkeys((c, d) for c, d, _ in pairs):
        mine = [r for r in recs if r.get("classifier") == clf and r.get("defense") == d and r.get("limit") == limit]
        latest = {
            r["threat"]: r
            for r in sorted(mine, key=lambda r: r.get("time", 0))
            if r.get("kind") == "worst" and r.get("attack") == ctx.a.aa_attack
        }
        suite = {t: latest[t] for t in AA_TIERS if t in latest}
        overall = max(
            (r for r in mine if r.kind == "worst" and over_all(r["threat"])),
            key=lambda r: (len(r.get("attack_params", {}).get("attacks", [])), r.get("time", 0)),
            default=None,
        )
        done = [t for t in AA_TIERS if (clf, d, t) in covered]
        w = overall.get("defended_adv_acc") if overall else None
        worst[f"{clf}/{d}"] = {
            "threats": done,
            "aa": {t: r.get("defended_adv_acc") for t, r in suite.items()},
            "worst_over_threats": w,
        }
        today = AA_HEADLINE.get((clf, d), (None, None))
        per_defense.append(
            [
                clf,
                d,
                today[0],
                today[1],
                ", ".join(done) or "—",
                " · ".join(
                    f"{t} {r.get('defended_adv_acc'):.3f}"
                    for t, r in suite.items()
                    if r.get("defended_adv_acc") is not None
                )
                or "—",
                w,
            ]
        )
    log(
        f"[step aa] AutoAttack on {limit} images (aa: the per-sample worst of its four components per threat "
        "model; the last column: over every threat model completed, image by image):"
    )
    log(
        table(
            [
                "classifier",
                "defense",
                "headline today (64 images)",
                "FGSM/PGD on 500",
                "threat models done",
                "aa per threat model",
                "worst over them",
            ],
            per_defense,
        )
    )
    missed = [u["id"] for u in units if ran.get(u["id"], {}).get("status") != "ok"]
    failed = [u["id"] for u in units if str(ran.get(u["id"], {}).get("status", "")).startswith("failed")]
    status = (
        _status(rc, timed_out)
        if (rc and not timed_out)
        else (
            f"partial ({len(failed)} unit(s) failed)" if failed else "partial (budget)" if missed or timed_out else "ok"
        )
    )
    if missed:
        log(f"[step aa] units not finished: {', '.join(map(str, missed))} (the plan's order put them last)")
    return {
        "status": status,
        "n": limit,
        "units": len(units),
        "units_done": len(units) - len(missed),
        "seeded_runs": seeded,
        "run_units": rows,
        "planned": ["/".join(p) for p in pairs],
        "covered": ["/".join(p) for p in covered],
        "cells": {
            "/".join(p): {
                c: cells[(p[0], p[1], t, c)].get("defended_adv_acc")
                for c, t in aa_stored_as(p[2]).items()
                if (p[0], p[1], t, c) in cells
            }
            for p in pairs
        },
        "worst": worst,
    }


# ---- step 2 ------------------------------------------------------------------------------------
def step_grid(ctx: Ctx, budget: float) -> dict[str, Any]:
    r = ctx.base.get("run", {})
    grid = list(r.get("defenses", ["none"]))
    if ctx.dry:  # the five published counterGAN variants cost the dry run most and test nothing new
        full, grid = grid, [d for d in grid if d == "countergan" or not ctx.plugin(d).startswith("countergan")]
        log(f"[step 2] dry run: {len(grid)} of the default grid's {len(full)} defenses ({', '.join(grid)})")
    attacks, threats = list(r.get("attack", ["fgsm"])), list(r.get("threat", ["gray"]))
    eps = float(r.get("eps", [0.3])[0])
    limit = ctx.s["limit2"] or r.get("limit")
    cfg = ctx.config("step2-default-grid", grid)
    results = ctx.step_results("step2-default-grid")
    cmd = ctx.bench_args(cfg, results) + (["--limit", str(limit), "--defenses", ",".join(grid)] if ctx.dry else [])
    rc, out, timed_out = run(cmd, ctx.env(), budget)
    recs = pick(results, grid, attacks, eps, threats, limit)
    log(f"[step 2] default grid ({', '.join(attacks)} eps {eps:g}, {', '.join(threats)}, {limit} images):")
    log(record_table(recs))
    done = _computed(out)
    return {
        "status": _status(rc, timed_out),
        "cells": len(recs),
        "run_line": done,
        "ms_per_sample": {f"{x['defense']}/{x['attack']}/{x['threat']}": x.get("defense_ms_per_sample") for x in recs},
    }


def _computed(out: str) -> str | None:
    return next((line.strip() for line in out.splitlines() if line.startswith("[run] computed")), None)


def _status(rc: int, timed_out: bool) -> str:
    return "partial (budget)" if timed_out else ("ok" if rc == 0 else f"failed (exit {rc})")


# ---- step 3 ------------------------------------------------------------------------------------
def step_ratio(ctx: Ctx, budget: float) -> dict[str, Any]:
    L, R, limit = ctx.s["L"], ctx.s["R"], ctx.s["limit3"]
    grid = ["defensegan", "countergan"]
    cfg = ctx.config("step3-defensegan-vs-countergan", grid, {"defensegan": {"L": L, "R": R}})
    results = ctx.step_results("step3-defensegan-vs-countergan")
    cmd = ctx.bench_args(cfg, results) + [
        "--defenses",
        ",".join(grid),
        "--attack",
        "fgsm",
        "--eps",
        "0.3",
        "--threat",
        "gray",
        "--limit",
        str(limit),
    ]
    rc, out, timed_out = run(cmd, ctx.env(), budget)
    recs = pick(results, grid, ["fgsm"], 0.3, ["gray"], limit)
    log(f"[step 3] DefenseGAN (L = {L}, R = {R}) and the counterGAN preset, FGSM 0.3 gray, {limit} images:")
    log(record_table(recs))
    ms = {x["defense"]: x.get("defense_ms_per_sample") for x in recs}
    info: dict[str, Any] = {
        "status": _status(rc, timed_out),
        "L": L,
        "R": R,
        "n": limit,
        "defensegan_ms_per_sample": ms.get("defensegan"),
        "countergan_ms_per_sample": ms.get("countergan"),
        "device": recs[0].get("device") if recs else None,
    }
    if ms.get("defensegan") and ms.get("countergan"):
        info["ratio"] = ms["defensegan"] / ms["countergan"]
        log(
            f"[step 3] DefenseGAN {ms['defensegan']:.4g} ms/sample / counterGAN {ms['countergan']:.4g} ms/sample "
            f"= {info['ratio']:.4g}× on {info['device']}"
        )
    else:
        log("[step 3] no ratio: a record is missing")
    return info


# ---- step 4 (the worker runs in its own process: a compile that outlives the budget is killed) ----
def step_reconstruction(ctx: Ctx, budget: float) -> dict[str, Any]:
    path = ctx.work / "step4-reconstruction.jsonl"
    path.unlink(missing_ok=True)
    cmd = [
        ctx.py,
        "-m",
        "tools.gpu",
        "--step4-worker",
        str(path),
        "--device",
        ctx.device,
        "--L",
        str(ctx.s["L"]),
        "--R",
        str(ctx.s["R"]),
        "--batch",
        str(ctx.s["batch4"]),
        "--repeats",
        str(ctx.s["repeats4"]),
        "--widths",
        ctx.a.widths4 or ctx.s["widths4"],
        "--seconds",
        str(max(budget - 10, 5)),
    ]
    rc, out, timed_out = run(cmd, ctx.env(), budget)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    info: dict[str, Any] = {"status": _status(rc, timed_out), "widths": {}}
    out_rows = []
    for width in dict.fromkeys(r["width"] for r in rows):
        rs = {r["variant"]: r for r in rows if r["width"] == width}
        ms = {k: r.get("ms_per_sample") for k, r in rs.items() if r.get("ms_per_sample")}
        eager, floor, floor_g = ms.get("eager"), ms.get("floor"), ms.get("floor+graphs")
        fast = {k: v for k, v in ms.items() if k in ("graphs", "compile", "compile+graphs")}
        best = min(fast, key=fast.get) if fast else None
        w = {"ms_per_sample": ms, "best": best}
        if eager and best:
            w["speedup_best_vs_eager"] = eager / fast[best]
        if floor:
            w["eager_over_floor"] = eager / floor if eager else None
            w["best_over_floor"] = fast[best] / floor if best else None
        if floor_g and best:
            w["best_over_floor_graphs"] = fast[best] / floor_g
        info["widths"][str(width)] = w
        for k, r in rs.items():
            v = r.get("ms_per_sample")
            out_rows.append(
                [
                    width,
                    k,
                    r.get("status"),
                    v,
                    eager / v if v and eager else None,
                    v / floor if v and floor else None,
                    v / floor_g if v and floor_g else None,
                    r.get("setup_s"),
                    r.get("max_abs_diff"),
                    r.get("mean_loss"),
                    r.get("note", ""),
                ]
            )
    head = rows[0] if rows else {}
    log(
        f"[step 4] DefenseGAN reconstruction, L = {head.get('L')}, R = {head.get('R')}, batch {head.get('batch')} "
        f"on {head.get('device')} (median of {ctx.s['repeats4']} timed calls after one untimed):"
    )
    log(
        table(
            [
                "width",
                "variant",
                "status",
                "ms/sample",
                "× eager",
                "/ floor",
                "/ floor+graphs",
                "setup s",
                "max|Δ| vs eager",
                "mean loss",
                "note",
            ],
            out_rows,
        )
    )
    for width, w in info["widths"].items():
        if w.get("best"):
            log(
                f"[step 4] width {width}: best {w['best']} {w['ms_per_sample'][w['best']]:.4g} ms/sample = "
                f"{w.get('speedup_best_vs_eager', float('nan')):.3g}× eager (goal ≥ 3); best / floor = "
                f"{(w.get('best_over_floor') or float('nan')):.3g} (goal ≤ 1.25)"
            )
    return info


# ---- step 1b ----------------------------------------------------------------------------------
def step_train(ctx: Ctx, budget: float) -> dict[str, Any]:
    if not _has("tools.defensegan_curve"):
        log("[step 1b] skipped: tools.defensegan_curve is missing (the DefenseGAN issue builds it)")
        return {"status": "skipped (no tools.defensegan_curve)"}
    s = ctx.s
    seconds = min(s["train_seconds"], budget - 45)
    if seconds < 10:
        log(f"[step 1b] skipped: {budget:.0f} s left, too little to train")
        return {"status": "skipped (budget)"}
    w = s["train_width"]
    folder, curve_results = ctx.work / "defensegan-curve", ctx.work / "curve-results"
    cmd = [
        ctx.py,
        "-m",
        "tools.defensegan_curve",
        "--widths",
        str(w),
        "--lr",
        str(s["train_lr"]),
        "--batch-size",
        str(s["train_batch"]),
        "--max-seconds",
        f"{seconds:.0f}",
        "--device",
        ctx.device,
        "--no-probe",
        "--probe-every",
        "100000000",
        "--slice-seconds",
        "60",
        "--out",
        str(folder),
        "--results-dir",
        str(curve_results),
    ]
    if s["train_iterations"]:
        cmd += ["--iterations", str(s["train_iterations"])]
    rc, out, timed_out = run(cmd, ctx.env(), budget - 20)
    snaps = sorted((folder / f"w{w}").glob("gen-it*.pt"))
    if not snaps:
        log(f"[step 1b] no generator snapshot under {folder / f'w{w}'} (exit {rc})")
        return {"status": _status(rc, timed_out) if rc else "failed (no snapshot)"}
    snap = snaps[-1]
    shipped = ctx.work / "shipped"
    tag = ctx.a.ship_tag
    rc2, out2, _ = run(
        [ctx.py, "-m", "tools.defensegan_curve", "--ship", str(snap), "--tag", tag, "--ship-dir", str(shipped)],
        ctx.env(),
        max(ctx.left(), 30),
    )
    kept = []
    for f in [snap, *sorted(shipped.glob(f"*-defensegan-{tag}.*"))]:
        if f.stat().st_size <= MAX_FILE:
            shutil.copy2(f, ctx.out / (f"defensegan-w{w}-{f.name}" if f == snap else f.name))
            kept.append(f.name)
        else:
            log(f"[step 1b] {f.name} is {f.stat().st_size / 2**20:.1f} MiB: too big to bring back, left in {f.parent}")
    prov = {}
    for j in shipped.glob(f"*-defensegan-{tag}.json"):
        prov = json.loads(j.read_text())
    m = re.search(r"gen-it(\d+)", snap.name)
    info = {
        "status": "ok" if rc == 0 and rc2 == 0 else _status(rc or rc2, timed_out),
        "width": w,
        "iterations": prov.get("iterations", int(m.group(1)) if m else None),
        "seconds": prov.get("seconds"),
        "snapshot": snap.name,
        "sha256": prov.get("sha256"),
        "kept_in_out": kept,
        "device": prov.get("device"),
    }
    its = info["iterations"] or 0
    log(
        table(
            ["width", "iterations", "train s", "it/s", "snapshot", "shipped sha256", "brought back"],
            [
                [
                    w,
                    its,
                    info["seconds"],
                    its / info["seconds"] if info["seconds"] else None,
                    snap.name,
                    (prov.get("sha256") or "")[:16],
                    ", ".join(kept),
                ]
            ],
        )
    )
    return info


# ---- step 5 -------------------------------------------------------------------------------------
def step_threats(ctx: Ctx, budget: float) -> dict[str, Any]:
    L, R, limit = ctx.s["L"], ctx.s["R"], ctx.s["limit5"]
    cfg = ctx.config(
        "step5-defensegan-threats",
        ["defensegan"],
        {"defensegan": {"L": L, "R": R}},
        {"pgd": {"steps": ctx.s["pgd_steps"]}},
    )
    results = ctx.step_results("step5-defensegan-threats")
    threats = ["gray", "bpda", "bpda-eot"]
    # One run: the runner does FGSM's cells before PGD's, each in this threat order, so a run
    # interrupted by the budget has kept the cheapest cells.
    cmd = ctx.bench_args(cfg, results) + [
        "--defenses",
        "defensegan",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.3",
        "--threat",
        ",".join(threats),
        "--limit",
        str(limit),
        "--eot-samples",
        str(ctx.s["eot"]),
    ]
    rc, out, timed_out = run(cmd, ctx.env(), budget)
    recs = pick(results, ["defensegan"], ["fgsm", "pgd"], 0.3, threats, limit)
    log(
        f"[step 5] DefenseGAN (L = {L}, R = {R}) on {limit} images, FGSM and PGD-{ctx.s['pgd_steps']} at 0.3, "
        f"EOT {ctx.s['eot']}:"
    )
    log(record_table(recs))
    return {
        "status": _status(rc, timed_out),
        "run_line": _computed(out),
        "cells": {
            f"{r['attack']}/{r['threat']}": {
                "defended_adv": r.get("defended_adv_acc"),
                "ms_per_sample": r.get("defense_ms_per_sample"),
            }
            for r in recs
        },
    }


STEPS: dict[str, Callable[[Ctx, float], dict[str, Any]]] = {
    "1": step_env,
    "aa": step_aa,
    "1b": step_train,
    "2": step_grid,
    "3": step_ratio,
    "4": step_reconstruction,
    "5": step_threats,
}


def run_all(a: argparse.Namespace) -> int:
    ctx = Ctx(a)
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.out.mkdir(parents=True, exist_ok=True)
    log.add(ctx.work / "gpu.log")
    if ctx.out != ctx.work:
        log.add(ctx.out / "gpu-log.txt")
    signal.signal(signal.SIGTERM, lambda *_: _terminate(ctx))
    order = [s.strip() for s in a.steps.split(",") if s.strip()]
    bad = [s for s in order if s not in STEPS]
    if bad:
        log(f"error: unknown step(s) {', '.join(bad)}; steps are {', '.join(STEP_ORDER)}")
        return 2
    log(
        f"[gpu] {'DRY RUN on CPU, tiny sizes' if ctx.dry else 'GPU run'}: steps {', '.join(order)}, budget "
        f"{ctx.s['budget']:.0f} s, device {ctx.device}, work folder {ctx.work}, out {ctx.out}"
    )
    for key in order:
        budget = min(float(ctx.s["caps"][key]), ctx.left())
        log(f"\n=== step {key}: {TITLES[key]} (budget {max(budget, 0):.0f} s, {max(ctx.left(), 0):.0f} s left) ===")
        t0 = time.perf_counter()
        if ctx.abort:
            info = {"status": "skipped (an earlier step failed)"}
            log(f"[step {key}] skipped: step 1 found no usable environment")
        elif budget < 5:
            info = {"status": "skipped (budget)"}
            log(f"[step {key}] skipped: the budget is gone ({max(ctx.left(), 0):.0f} s left of {ctx.s['budget']:.0f})")
        else:
            try:
                info = STEPS[key](ctx, budget)
            except Exception as exc:  # noqa: BLE001  (one step's failure must not cost the others)
                info = {"status": f"failed: {type(exc).__name__}: {exc}"}
                log(f"[step {key}] failed: {type(exc).__name__}: {exc}")
                log(traceback.format_exc().rstrip())
                if key == "1":
                    ctx.abort = True
        info["seconds"] = round(time.perf_counter() - t0, 1)
        info["budget_s"] = round(max(budget, 0), 1)
        ctx.summary["steps"][key] = info
        ctx.safe_pack()
    finish(ctx, order)
    return 0 if not ctx.abort else 1


def finish(ctx: Ctx, order: list[str]) -> None:
    """Merge every step's records into ``results/`` and pack them, then draw the report and pack
    again: a report that fails (the previous GPU run's crashed in pandas) or outlives its budget
    costs the report, never the records or the pack."""
    try:
        merged = merge(ctx)
    except Exception as exc:  # noqa: BLE001  (the steps' own folders are packed either way)
        merged = 0
        ctx.summary["merge"] = f"failed: {type(exc).__name__}: {exc}"
        log(
            f"[gpu] merging the records failed: {type(exc).__name__}: {exc}; each step's records are packed "
            "in its own folder (steps/)"
        )
    ctx.safe_pack()
    if merged and ctx.left() + ctx.s["reserve"] > 10:
        try:
            rc, _, timed_out = run(
                [ctx.py, "-m", "bench", "report", "--results-dir", str(ctx.results)]
                + (["--no-plots"] if ctx.dry else []),
                ctx.env(),
                max(ctx.left() + ctx.s["reserve"] - 5, 10),
            )
            ctx.summary["report"] = _status(rc, timed_out)
        except Exception as exc:  # noqa: BLE001
            rc, ctx.summary["report"] = 1, f"failed: {type(exc).__name__}: {exc}"
        if ctx.summary["report"] != "ok":
            log(
                f"[gpu] the report {ctx.summary['report']}: the records are packed without it "
                f"(`python -m bench report --results-dir <unpacked>/gpu-results/results` draws it from them)"
            )
    elif merged:
        ctx.summary["report"] = "skipped (budget)"
    ctx.safe_pack()
    try:
        final_summary(ctx, order)
    except Exception as exc:  # noqa: BLE001
        log(f"[gpu] the summary failed: {type(exc).__name__}: {exc}")
    ctx.safe_pack()


def merge(ctx: Ctx) -> int:
    """Copy every step's runs into ``results/`` (one folder of records for one report); returns how many."""
    n = 0
    for run_dir in sorted((ctx.work / "steps").glob("*/runs/*")):
        if (run_dir / "records.jsonl").is_file() and (run_dir / "records.jsonl").stat().st_size:
            dest = ctx.results / "runs" / run_dir.name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(run_dir, dest)
            n += 1
    if n:
        log(f"[gpu] {n} run(s) with records merged into {ctx.results}")
    return n


def final_summary(ctx: Ctx, order: list[str]) -> None:
    st = ctx.summary["steps"]
    log(
        f"\n=== summary: {ctx.summary.get('device', ctx.device)}, {time.perf_counter() - ctx.t0:.0f} s of "
        f"{ctx.s['budget']:.0f} ==="
    )
    log(
        table(
            ["step", "what", "status", "seconds", "budget s"],
            [
                [k, TITLES[k], st.get(k, {}).get("status"), st.get(k, {}).get("seconds"), st.get(k, {}).get("budget_s")]
                for k in order
            ],
        )
    )
    sa = st.get("aa", {})
    if sa.get("planned"):
        log(
            f"AutoAttack on {sa['n']} images: {sa['units_done']} of {sa['units']} units, {len(sa['covered'])} of "
            f"{len(sa['planned'])} (classifier, defense, threat) pairs complete; worst over the threat models done: "
            + ", ".join(
                f"{k} {v['worst_over_threats']:.3f}"
                for k, v in sa.get("worst", {}).items()
                if v.get("worst_over_threats") is not None
            )
        )
    s3 = st.get("3", {})
    if s3.get("ratio"):
        log(
            f"DefenseGAN (L = {s3['L']}, R = {s3['R']}): {s3['defensegan_ms_per_sample']:.4g} ms/sample; counterGAN "
            f"preset: {s3['countergan_ms_per_sample']:.4g} ms/sample; ratio {s3['ratio']:.4g}× ({s3['device']})"
        )
    for width, w in st.get("4", {}).get("widths", {}).items():
        ms = w["ms_per_sample"]
        log(
            f"reconstruction width {width}: eager {ms.get('eager', float('nan')):.4g} ms/sample, floor "
            f"{ms.get('floor', float('nan')):.4g}"
            + (
                f", best {w['best']} {ms[w['best']]:.4g} "
                f"({w.get('speedup_best_vs_eager', float('nan')):.3g}× eager, "
                f"{(w.get('best_over_floor') or float('nan')):.3g}× floor)"
                if w.get("best")
                else ", no compiled/graphed variant"
            )
        )
    files = sorted(p.name for p in ctx.out.iterdir() if p.is_file() and not p.name.startswith("."))
    log(f"[gpu] packed into {ctx.out}: {', '.join(files)}")
    too_many = len(files) > 8
    if too_many:
        log(f"[gpu] warning: {len(files)} files under {ctx.out}; a GPU machine returns 8")


def _terminate(ctx: Ctx) -> None:
    if gpu_io._child is not None:  # the benchmark subprocess running now, if any
        _signal(gpu_io._child, signal.SIGKILL)
    log("[gpu] terminated: packing what is there")
    try:
        ctx.pack()
    finally:
        os._exit(143)


# ---- preparation (CPU side, network) ---------------------------------------------------------------
def prepare(wheels: Path) -> int:
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *WHEELS]
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc == 0:
        files = sorted(wheels.glob("*.whl"))
        total = sum(f.stat().st_size for f in files)
        print(
            f"[gpu] {len(files)} wheel(s), {total / 2**20:.1f} MiB in {wheels}: carry "
            f"{wheels.relative_to(ROOT) if wheels.is_relative_to(ROOT) else wheels} with the GPU command",
            flush=True,
        )
    return rc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="the same steps on CPU with tiny sizes (CI)")
    p.add_argument("--prepare", action="store_true", help="download the wheels to carry (needs network) and exit")
    p.add_argument(
        "--out",
        default=os.environ.get("OUT") or None,
        help="where the packed results go (default $OUT, else <work>/out)",
    )
    p.add_argument("--work", help="the work folder (default build/gpu-run, dry run build/gpu-dry)")
    p.add_argument("--wheels", default=str(ROOT / "wheels"), help="folder of carried wheels (default wheels/)")
    p.add_argument(
        "--steps", default=",".join(STEP_ORDER), help=f"steps to run, in this order (default {','.join(STEP_ORDER)})"
    )
    p.add_argument("--budget", type=float, help="seconds for all steps (default 540; dry run 900, a safety net)")
    p.add_argument("--train-seconds", type=float, help="step 1b's training seconds (default 210; dry run 30)")
    p.add_argument("--device", help="default cuda (dry run: cpu)")
    p.add_argument("--widths4", help="step 4's generator widths, 0 = the default generator's (default 0,64)")
    p.add_argument("--ship-tag", default="gpu", help="step 1b's generator name: mnist-defensegan-<tag>.pt")
    p.add_argument(
        "--aa-attack",
        default="aa-individual",
        choices=("aa-individual",),
        help="the AutoAttack suite step aa runs (default aa-individual: every component on every "
        "image, as the threat-matrix-aa grid's stored cells, so they combine in the headline; "
        "the cascade, aa, is not offered: this step's coverage counts individual-mode cells)",
    )
    p.add_argument("--force-install", action="store_true", help="install the carried wheels even when present")
    # the step 4 worker (internal)
    p.add_argument("--step4-worker", metavar="JSONL", help=argparse.SUPPRESS)
    p.add_argument("--L", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--R", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--widths", default="0", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=120, help=argparse.SUPPRESS)  # the workers' budget
    p.add_argument("--compile-backend", default="auto", help=argparse.SUPPRESS)
    # step aa's worker (internal)
    p.add_argument("--aa-worker", metavar="JOB", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if a.prepare:
        return prepare(Path(a.wheels))
    if a.aa_worker:
        return aa_worker(a)
    if a.step4_worker:
        a.device = a.device or "cuda"
        return step4_worker(a)
    return run_all(a)


if __name__ == "__main__":
    sys.exit(main())
