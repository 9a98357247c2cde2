"""bench.api: the library entry point runs the grid the CLI runs, validated by the same path."""

from __future__ import annotations

import json

import pytest
from conftest import read_records

import bench
from bench.cli import main
from bench.core.errors import BenchError

GRID = dict(defenses=["none", "bitdepth"], attack=["fgsm"], eps=[0.3], limit=48)


def _numbers(recs):
    keys = ("clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc", "correct")
    return {r["cell_key"]: {k: r[k] for k in keys} for r in recs}


def test_evaluate_and_the_cli_store_the_same_cells(run_args, tiny_toml, cache_dir, tmp_path):
    assert main(run_args("--defenses", "none,bitdepth", "--attack", "fgsm", "--eps", "0.3")) == 0
    cli = read_records(run_args.results)
    out = tmp_path / "api"
    api = bench.evaluate(config=tiny_toml, cache_dir=str(cache_dir), results_dir=out, report=True, **GRID)
    assert _numbers(api) == _numbers(cli) and len(api) == 2
    assert _numbers(read_records(out)) == _numbers(cli)  # stored exactly as the CLI stores
    assert (out / "results.md").is_file()
    env = json.loads(next(out.glob("runs/*/env.json")).read_text())
    assert env["command"][0] == "bench.evaluate" and json.loads(env["command"][1])["limit"] == 48
    df = bench.table(api)
    assert set(df["defense"]) == {"none", "bitdepth"} and df["defended_adv_acc_ci_low"].notna().all()


def test_evaluate_without_a_results_dir_keeps_nothing(tiny_toml, cache_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recs = bench.evaluate(config=tiny_toml, cache_dir=str(cache_dir), defenses=["none"], limit=16)
    assert len(recs) == 1 and 0 <= recs[0]["clean_acc"] <= 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"defenses": ["none"], "limt": 5}, "unknown setting.*limt"),
        ({"defenses": ["none"], "limit": "5"}, "limit.*positive integer"),
        ({"defenses": ["none"], "offline": "yes"}, "offline.*boolean"),
        ({"defenses": ["nonee"]}, "did you mean none"),
        ({"defense_params": {"countergan": 3}}, "defense_params must be a table"),
    ],
)
def test_evaluate_rejects_bad_settings_with_a_bench_error(bad, match, tiny_toml, cache_dir):
    with pytest.raises(BenchError, match=match):
        bench.evaluate(config=tiny_toml, cache_dir=str(cache_dir), **bad)
