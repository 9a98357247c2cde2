"""bench.core.numerics and bench.cli.numerics: the numerics mode, decided before torch loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.cli import numerics as cli_numerics
from bench.core import numerics

ROOT = Path(__file__).resolve().parent.parent


def test_portable_sets_its_variables_and_native_leaves_the_environment_alone():
    env = {"ATEN_CPU_CAPABILITY": "avx512"}
    assert numerics.apply("portable", env)
    assert {k: env[k] for k in numerics.PORTABLE_ENV} == numerics.PORTABLE_ENV
    assert env["CUBLAS_WORKSPACE_CONFIG"] == numerics.CUBLAS_WORKSPACE
    mine = {"ATEN_CPU_CAPABILITY": "avx2"}  # a user's own setting stands under native
    assert numerics.apply("native", mine) and mine["ATEN_CPU_CAPABILITY"] == "avx2" and "MKL_CBWR" not in mine


def test_a_process_that_loaded_torch_cannot_switch_modes(monkeypatch):
    import torch  # noqa: F401  (loaded, as in this test process)

    for k in numerics.PORTABLE_ENV:
        monkeypatch.delenv(k, raising=False)
    assert not numerics.apply("portable")
    assert "MKL_CBWR" not in os.environ  # nothing set that would not count
    assert numerics.apply("native") and numerics.mode_in_force() == "native"


def test_the_mode_comes_from_the_flag_the_config_or_the_default(tmp_path):
    toml = tmp_path / "b.toml"
    toml.write_text('[run]\nnumerics = "native"\n')
    assert cli_numerics.mode_for("run", ["--numerics", "native"]) == "native"
    assert cli_numerics.mode_for("run", ["--config", str(toml)]) == "native"
    assert cli_numerics.mode_for("run", ["--config", str(tmp_path / "none.toml")]) == "portable"
    assert cli_numerics.mode_for("report", []) is None and cli_numerics.mode_for("list", []) is None
    assert cli_numerics.mode_for("weights", []) == "native"  # the zoo was trained native


def test_verify_takes_the_mode_its_runs_name(tmp_path):
    assert cli_numerics.mode_for("verify", ["--results-dir", str(tmp_path)]) == "native"  # nothing stored
    for i, mode in enumerate(("portable", "portable")):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        (run / "env.json").write_text(json.dumps({"numerics": mode}))
    assert cli_numerics.mode_for("verify", ["--results-dir", str(tmp_path)]) == "portable"
    (tmp_path / "runs" / "r2").mkdir()
    (tmp_path / "runs" / "r2" / "env.json").write_text(json.dumps({}))  # a run from before modes: native
    assert cli_numerics.recorded(tmp_path) == "native"
    assert cli_numerics.mode_for("verify", ["--results-dir", str(tmp_path), "--numerics", "portable"]) == "portable"


def test_a_fresh_run_records_the_portable_mode_it_ran_under(tmp_path):
    """The CLI applies the mode before torch loads: ATen then really runs at AVX2 (or lower), and
    every record and env.json say so with the CPU vendor."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--offline",
            "--defenses",
            "none",
            "--limit",
            "8",
            "--results-dir",
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = next(tmp_path.glob("runs/*"))
    rec = json.loads((run / "records.jsonl").read_text().splitlines()[0])
    envj = json.loads((run / "env.json").read_text())
    for d in (rec, envj):
        assert d["numerics"] == "portable" and d["cpu_capability"] == "AVX2" and d["cpu_vendor"]


def test_a_cuda_worker_turns_on_deterministic_cuda_before_any_work_and_records_it(monkeypatch):
    """Issue 29: on a CUDA device cuDNN is deterministic, its autotuner off and torch's
    deterministic algorithms on before the first cell, and the machine facts every record and
    env.json carry say so. No GPU here: the device is faked, the settings are torch's own flags."""
    import torch

    from bench.core.config import Config
    from bench.run import worker

    before = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    monkeypatch.setattr(worker, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    torch.backends.cudnn.benchmark = True
    try:
        w = worker.Worker(Config(attack=["fgsm"]))
        got = w.machine["cuda_deterministic"]
        assert got["cudnn_deterministic"] and not got["cudnn_benchmark"] and got["deterministic_algorithms"]
        assert w.machine["gpu"] == "Fake GPU"
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[0], before[1]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])
