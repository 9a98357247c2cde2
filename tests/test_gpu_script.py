"""tools.gpu: the GPU script is an environment check, a plan (a grid file run by the ordinary runner)
and a packer; its dry run on CPU, as CI runs it, and its pieces."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bench.cli.parser import run_parser
from bench.core.config import load_grid, resolve
from tools import gpu

ROOT = Path(__file__).resolve().parent.parent
RANKING = ROOT / "results" / "reference" / "ranking-n500" / "grid.toml"


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "tools.gpu", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_dry_run_runs_the_plan_and_packs_every_folders_records(tmp_path):
    """`make gpu DRY_RUN=1`: the environment table, the dry plan through `python -m bench grid`, one
    tarball holding every results folder's records (the scratch of unfinished cells left out)."""
    for folder in gpu.results_dirs(gpu.DRY_PLAN):
        shutil.rmtree(folder, ignore_errors=True)
    out = tmp_path / "out"
    res = _script("--dry-run", "--work", str(tmp_path / "work"), "--out", str(out))
    log = res.stdout
    assert res.returncode == 0, log[-4000:] + res.stderr[-2000:]
    assert "| torch " in log and "| device " in log  # the environment table
    assert "python -m bench grid tools/gpu_plan_dry.toml --time-budget" in log
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    summary = summary or json.loads((tmp_path / "work" / "summary.json").read_text())
    assert summary["plan_exit"] == 0 and summary["skipped"] == [] and summary["stopped"] == []
    files = [p for p in out.iterdir() if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= gpu.MAX_FILE for p in files)
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    for name in ("gpu.log", "env.json", "summary.json"):
        assert f"gpu-results/{name}" in names
    for folder in gpu.results_dirs(gpu.DRY_PLAN):
        assert any(n.startswith(f"gpu-results/{folder.name}/runs/") and n.endswith("records.jsonl") for n in names)
        assert f"gpu-results/{folder.name}/results.md" in names
    assert not any("/partial/" in n or n.endswith(".pt") for n in names)


def _steps(plan: Path) -> list[list[str]]:
    return [s for s in load_grid(plan) if s[0] not in ("report", "adequacy")]


@pytest.mark.parametrize("plan", [gpu.PLAN, gpu.DRY_PLAN], ids=["plan", "dry-plan"])
def test_every_step_of_the_plan_is_a_valid_run(plan, monkeypatch):
    """The plan is data for the ordinary runner: every step parses and resolves by the one validation
    path (unknown keys, wrong types and unknown plugins are errors) without running."""
    monkeypatch.chdir(ROOT)
    for step in _steps(plan):
        assert (step[step.index("--device") + 1] == "cuda") if plan == gpu.PLAN else "--device" not in step, step
        step = ["cpu" if a == "cuda" else a for a in step]  # resolvable here; CUDA is checked where it runs
        args = vars(run_parser().parse_args(step))
        config = args.pop("config")
        args.pop("debug")
        cfg = resolve(args, config)
        assert cfg.results_dir.startswith("build/"), (plan.name, step)  # packed from there, never committed


def test_the_plan_spends_the_lease_on_the_ranking_rows_at_n_1000_first():
    ranking = {d for s in load_grid(RANKING) if "--defenses" in s for d in s[s.index("--defenses") + 1].split(",")}
    first = _steps(gpu.PLAN)[0]
    assert first[first.index("--config") + 1] == RANKING.relative_to(ROOT).as_posix()
    assert first[first.index("--limit") + 1] == "1000" and first[first.index("--threat") + 1] == "white"
    steps = [
        s for s in _steps(gpu.PLAN) if "--config" in s and s[s.index("--config") + 1].endswith("ranking-n500/grid.toml")
    ]
    covered = {d for s in steps for d in s[s.index("--defenses") + 1].split(",") if "--classifier" not in s}
    assert covered == ranking, covered ^ ranking
    threats = {t for s in steps if "--classifier" not in s for t in s[s.index("--threat") + 1].split(",")}
    assert threats == {"gray", "white", "bpda", "bpda-eot"}
    assert all(s[s.index("--attack") + 1].split(",")[0] == "aa" for s in steps)


def test_a_broken_environment_packs_what_there_is_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "NEEDED", ("no_such_module_for_the_gpu_test",))
    rc = gpu.main(["--dry-run", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--wheels", str(tmp_path)])
    assert rc == 1
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert "no wheel for no_such_module_for_the_gpu_test" in summary["env"]
    assert (tmp_path / "o" / "gpu-results.tar.gz").is_file()


def _wheel(folder: Path, name: str, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (what `pip download` brings for torchattacks and mlxtend)."""
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
            for p, d in files.items()
        )
        + f"{name}-{version}.dist-info/RECORD,,\n"
    )
    path = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return path


def test_carried_wheels_install_offline_into_a_target_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    wheel = _wheel(tmp_path / "wheels", "gpu_fake_pkg")
    _wheel(tmp_path / "wheels", "other_pkg")
    files = gpu.install_wheels(["gpu_fake_pkg"], tmp_path / "wheels", tmp_path / "site")
    assert files == [str(wheel)]
    assert (tmp_path / "site" / "gpu_fake_pkg" / "__init__.py").is_file()
    assert not (tmp_path / "site" / "other_pkg").exists()
    assert str(tmp_path / "site") in sys.path
    with pytest.raises(RuntimeError, match=r"no wheel for mlxtend.*make gpu-wheels"):
        gpu.install_wheels(["mlxtend"], tmp_path / "wheels", tmp_path / "site")


def test_an_oversized_pack_drops_the_sample_images_not_the_records(tmp_path, monkeypatch):
    folder = tmp_path / "ranking"
    (folder / "runs" / "r1" / "samples").mkdir(parents=True)
    (folder / "partial" / "abc").mkdir(parents=True)
    (folder / "runs" / "r1" / "records.jsonl").write_text('{"defense": "none"}\n')
    (folder / "runs" / "r1" / "samples" / "big.png").write_bytes(os.urandom(200 * 1024))
    (folder / "partial" / "abc" / "0-100.pt").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(gpu, "MAX_FILE", 64 * 1024)
    assert gpu.pack([folder], tmp_path, out) <= 64 * 1024
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu-results/ranking/runs/r1/records.jsonl" in names
    assert not any("/samples/" in n or "/partial/" in n for n in names)
