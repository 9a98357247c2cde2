"""bench.run.driver: per-sample worst-case rows over attacks and threat models."""

from __future__ import annotations

import pytest
import torch
from conftest import read_records

from bench.cli import main


def test_worst_case_rows_group_by_norm(run_args, tmp_path):
    (tmp_path / "l2.toml").write_text(
        "[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\n"
        'batch_size = 128\n[attacks."torchattacks:PGDL2"]\nsteps = 3\n'
    )
    args = run_args("--defenses", "none", "--attack", "fgsm,pgd,torchattacks:PGDL2", "--eps", "0.3", "--limit", "16")
    args[args.index("--config") + 1] = str(tmp_path / "l2.toml")
    assert main(args) == 0
    (worst,) = [r for r in read_records(run_args.results) if r.kind == "worst"]
    assert worst["norm"] == "Linf" and sorted(worst["attack_params"]["attacks"]) == ["fgsm", "pgd"]


def test_worst_over_threats_is_per_sample_over_every_attack_and_threat(run_args):
    from bench.core.record import decode_tensor as unbits

    assert (
        main(
            run_args(
                "--defenses",
                "trust_plugins:Blur",
                "--attack",
                "fgsm",
                "--eps",
                "0.2",
                "--threat",
                "gray,white,bpda",
                "--limit",
                "32",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    (worst,) = [r for r in recs if r["threat"] == "all"]
    assert worst["attack"] == "worst"
    assert sorted(worst["attack_params"]["attacks"]) == ["fgsm@bpda", "fgsm@gray", "fgsm@white"]
    assert worst["identity"]["attack_params"]["attacks"] == worst["attack_params"]["attacks"]
    parts = [r for r in recs if r["attack"] == "fgsm"]
    assert len(parts) == 3
    both = torch.stack([unbits(r["correct"]["defended_adv"], 32) for r in parts]).all(0)
    assert worst["defended_adv_acc"] == pytest.approx(both.float().mean().item())
    assert worst["defended_adv_acc"] <= min(r["defended_adv_acc"] for r in parts)
    assert not [r for r in recs if r.kind == "worst" and r["threat"] == "gray"]  # one attack: no row


def test_time_budget_stores_what_finished_and_says_what_is_left(run_args, capsys, monkeypatch):
    """--time-budget: the run stops between batches, exits 0, names what is left; the same command
    without the budget then finishes from what was stored and saved."""
    from bench.run import worker

    clock = iter(range(0, 10_000, 5))  # every look at the clock is 5 s later: the budget runs out
    monkeypatch.setattr(worker.time, "monotonic", lambda: float(next(clock)))
    args = run_args("--defenses", "none,bitdepth", "--attack", "fgsm,pgd", "--limit", "48", "--batch-size", "16")
    assert main([*args, "--time-budget", "12"]) == 0
    out = capsys.readouterr().out
    assert "[budget] --time-budget 12 s spent, stopped" in out and "run the same command again to continue" in out
    stored = len([r for r in read_records(run_args.results) if r.kind == "cell"])
    assert stored < 4 and "planned cell(s) left" in out
    monkeypatch.undo()
    assert main(args) == 0
    assert len([r for r in read_records(run_args.results) if r.kind == "cell"]) == 4
    assert not (run_args.results / "partial").exists()


def test_time_budget_needs_the_local_executor():
    from bench.core.config import resolve
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="local executor"):
        resolve({"time_budget": 60, "executor": "ray"}, None)


def test_a_library_caller_stopped_by_its_time_budget_is_told_what_is_left(
    tiny_toml, cache_dir, tmp_path, capsys, monkeypatch
):
    """bench.evaluate(time_budget=...) returns what finished; it says so on stderr even when not verbose."""
    import bench
    from bench.run import worker

    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(worker.time, "monotonic", lambda: float(next(clock)))
    records = bench.evaluate(
        config=tiny_toml,
        cache_dir=str(cache_dir),
        results_dir=tmp_path / "r",
        defenses=["none", "bitdepth"],
        attack=["fgsm", "pgd"],
        limit=48,
        batch_size=16,
        time_budget=12,
    )
    err = capsys.readouterr().err
    assert "[budget] --time-budget 12 s spent" in err and "run the same command again to continue" in err
    assert len([r for r in records if r.kind == "cell"]) < 4
