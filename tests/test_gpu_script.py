"""tools.gpu (issue 11): the GPU script's dry run on CPU, as CI runs it, and its pieces."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tools import gpu

ROOT = Path(__file__).resolve().parent.parent


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "tools.gpu", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_runs_every_step_and_packs_the_results(tmp_path):
    """`make gpu DRY_RUN=1`: every step on CPU with tiny sizes, each prints its table, one tar comes back."""
    out = tmp_path / "out"
    res = _script("--dry-run", "--work", str(tmp_path / "work"), "--out", str(out))
    log = res.stdout
    assert res.returncode == 0, log[-4000:] + res.stderr[-2000:]
    for key in gpu.STEP_ORDER:
        assert f"=== step {key}: {gpu.TITLES[key]}" in log
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["dry_run"] and set(steps) == set(gpu.STEP_ORDER)
    for key in ("1", "2", "3", "4", "5"):
        assert steps[key]["status"] == "ok", (key, steps[key])
    if importlib_available("tools.defensegan_curve"):
        assert steps["1b"]["status"] == "ok", steps["1b"]
        assert any(name.endswith(".pt") for name in steps["1b"]["kept_in_out"])
    else:
        assert "skipped" in steps["1b"]["status"]
    # the tables
    assert "| defense " in log and "| countergan " in log and "| defensegan-fast " in log       # step 2
    assert steps["3"]["ratio"] > 0 and "[step 3] DefenseGAN" in log                              # step 3
    rows = {r["variant"]: r for r in map(json.loads, (tmp_path / "work" / "step4-reconstruction.jsonl")
                                         .read_text().splitlines())}
    for variant in ("eager", "eager-func", "floor"):                                             # step 4
        assert rows[variant]["status"] == "ok" and rows[variant]["ms_per_sample"] > 0
    assert rows["eager-func"]["max_abs_diff"] < 1e-4  # the rewritten descent is the defense's
    assert rows["graphs"]["status"] == "skipped" and "CUDA" in rows["graphs"]["note"]
    assert rows["compile"]["status"] in ("ok", "skipped"), rows["compile"]
    assert "| width | variant " in log
    assert {c.split("/")[1] for c in steps["5"]["cells"]} == {"gray", "bpda", "bpda-eot"}       # step 5
    # what comes back: ≤ 8 files of ≤ 16 MiB, the records and the report in one tar
    files = [p for p in out.iterdir() if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= gpu.MAX_FILE for p in files)
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu-results/gpu.log" in names and "gpu-results/summary.json" in names
    assert "gpu-results/results/results.md" in names
    assert any(n.startswith("gpu-results/results/runs/") and n.endswith("records.jsonl") for n in names)
    assert not any("/cache/" in n or n.endswith(".pt") for n in names)
    assert "=== summary" in log and "DefenseGAN (L = 5, R = 2)" in log


def importlib_available(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_a_spent_budget_skips_every_step_with_a_message(tmp_path):
    res = _script("--dry-run", "--budget", "0", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                  timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stdout.count("skipped: the budget is gone") == len(gpu.STEP_ORDER)
    steps = json.loads((tmp_path / "o" / "summary.json").read_text())["steps"]
    assert all(s["status"] == "skipped (budget)" for s in steps.values())
    assert (tmp_path / "o" / "gpu-results.tar.gz").is_file()


def test_unknown_step_is_refused(tmp_path):
    res = _script("--dry-run", "--steps", "1,9", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                  timeout=120)
    assert res.returncode == 2 and "unknown step(s) 9" in res.stdout


def _wheel(folder: Path, name: str, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (what `pip download` brings for torchattacks and mlxtend)."""
    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for p, d in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
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
    with pytest.raises(RuntimeError, match="no wheel for mlxtend.*make gpu-wheels"):
        gpu.install_wheels(["mlxtend"], tmp_path / "wheels", tmp_path / "site")


def test_step_configs_are_bench_toml_plus_overrides():
    base = tomllib.loads((ROOT / "bench.toml").read_text())
    doc = {**base, "defenses": {**base.get("defenses", {}), "defensegan": {"L": 200, "R": 10}},
           "attacks": {"pgd": {"steps": 40}, "torchattacks:MIFGSM": {"decay": 1.0}}}
    assert tomllib.loads(gpu.dump_toml(doc)) == doc


def test_records_are_picked_per_cell_latest_first(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    rows = [{"defense": "a", "attack": "fgsm", "threat": "gray", "eps": 0.3, "limit": 8, "time": 1, "v": 1},
            {"defense": "a", "attack": "fgsm", "threat": "gray", "eps": 0.3, "limit": 8, "time": 2, "v": 2},
            {"defense": "a", "attack": "fgsm", "threat": "gray", "eps": 0.3, "limit": 16, "time": 3, "v": 3},
            {"defense": "b", "attack": "pgd", "threat": "bpda", "eps": 0.3, "limit": 8, "time": 1, "v": 4}]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn": ')
    got = gpu.pick(tmp_path, ["a", "b"], ["fgsm"], 0.3, ["gray"], 8)
    assert [r["v"] for r in got] == [2]
