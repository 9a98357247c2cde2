"""The Ray executor: same records as the local one; clean errors without Ray."""

import builtins
import os

import pytest
from conftest import read_records

from bench.cli import main

ray = pytest.importorskip("ray")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLER = """
import os
from defenses.base import Defense


class DieOnce(Defense):
    \"\"\"Kills its worker process the first time it runs. Example: --defenses killer:DieOnce\"\"\"

    def forward(self, x):
        marker = os.environ["DEFENSE_BENCH_KILL_MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return x
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_plugins")
    (folder / "killer.py").write_text(KILLER)
    return folder


@pytest.fixture(scope="module")
def ray_local(plugin_dir):
    env = {
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), ROOT]),
        "DEFENSE_BENCH_KILL_MARKER": str(plugin_dir / "killed-once"),
    }
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env}
    )
    yield
    ray.shutdown()


def test_a_killed_worker_costs_a_retry_not_a_record(run_args, plugin_dir, ray_local, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_dir))
    assert (
        main(
            run_args(
                "--defenses",
                "none,killer:DieOnce",
                "--attack",
                "fgsm",
                "--eps",
                "0.1,0.2",
                "--limit",
                "16",
                "--executor",
                "ray",
            )
        )
        == 0
    )
    assert (plugin_dir / "killed-once").exists()  # a worker really died
    recs = read_records(run_args.results)
    keys = [(r["defense"], r["eps"]) for r in recs]
    assert sorted(keys) == sorted({(d, e) for d in ("none", "killer:DieOnce") for e in (0.1, 0.2)})


def test_ray_and_local_store_identical_accuracies(run_args, tmp_path, ray_local):
    grid = (
        "--defenses",
        "none,examples.gaussian_blur:GaussianBlur",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.1,0.3",
        "--limit",
        "32",
    )
    assert main(run_args(*grid)) == 0
    local = read_records(run_args.results)
    args = run_args(*grid, "--executor", "ray", "--rerun")
    assert main(args) == 0
    every = read_records(run_args.results)
    remote = [r for r in every if r["run_id"] != local[0]["run_id"]]
    key = lambda r: (r["defense"], r["attack"], r["eps"])
    assert sorted(map(key, local)) == sorted(map(key, remote))
    assert len(remote) == 8 + 4  # 8 cells + a worst-case row per (defense, eps)
    by_local = {key(r): r for r in local}
    for r in remote:
        for acc in ("clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc"):
            assert r[acc] == by_local[key(r)][acc], (key(r), acc)


def test_missing_ray_is_a_clean_error(run_args, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(run_args("--executor", "ray")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "ray" in err[0]


def test_unknown_executor(run_args, capsys):
    assert main(run_args("--executor", "spark")) == 2
    assert "unknown executor 'spark'" in capsys.readouterr().err


@pytest.mark.slow  # ~45 s on 2 cores (Ray workers start, import torch, run AutoAttack's four stages)
def test_ray_sends_a_cascade_stage_after_its_previous_stage_and_matches_local(run_args, tmp_path, ray_local):
    budgets = (
        "[attacks.aa-apgd-ce]\nsteps = 2\n[attacks.aa-apgd-t]\nsteps = 1\n[attacks.aa-fab-t]\nsteps = 1\n"
        "[attacks.aa-square]\nn_queries = 5\n"
    )
    config = tmp_path / "aa.toml"
    config.write_text("[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n" + budgets)
    grid = ("--defenses", "bitdepth", "--attack", "aa", "--eps", "0.3", "--threat", "white", "--limit", "8")
    args = run_args(*grid)
    args[args.index("--config") + 1] = str(config)
    assert main(args) == 0
    local = read_records(run_args.results)
    assert main([*args, "--executor", "ray", "--rerun"]) == 0
    remote = [r for r in read_records(run_args.results) if r["run_id"] != local[0]["run_id"]]
    assert sorted(r["cell_key"] for r in remote) == sorted(r["cell_key"] for r in local)
    by_key = {r["cell_key"]: r for r in local}
    assert any(r.get("ran_on") for r in remote)
    for r in remote:
        assert r["correct"] == by_key[r["cell_key"]]["correct"] and r.get("ran_on") == by_key[r["cell_key"]].get(
            "ran_on"
        )
