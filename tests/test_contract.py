"""bench.run.contract: a plugin's output checked where it enters the harness (issue 38).

The planted plugins are in tests/trust_plugins.py, run as a user runs theirs (``module:Class``).
"""

from __future__ import annotations

import pytest
import torch
from conftest import cells

from bench.cli import main
from bench.core.errors import BenchError
from bench.run import contract


def run(run_args, capsys, defenses: str, *extra: str) -> tuple[int, list[str]]:
    code = main(run_args("--defenses", defenses, "--attack", "fgsm", "--eps", "0.3", *extra))
    return code, capsys.readouterr().err.strip().splitlines()


# --- the checks themselves -------------------------------------------------------------------


def test_shape_dtype_device_and_nonfinite_are_errors_range_is_a_number():
    x = torch.rand(2, 1, 4, 4)
    assert contract.defense_output("d", "here", x, x.clone()) == (x.min().item(), x.max().item())
    for bad, said in [
        (x[:, :, :2, :2], "shape (2, 1, 2, 2) float32 on cpu for an input of shape (2, 1, 4, 4)"),
        (x.double(), "float64"),
        (torch.empty(2, 1, 4, 4, device="meta"), "on meta"),
        (x.numpy(), "a ndarray, not a tensor"),
        (x * float("inf"), "NaN/inf"),
    ]:
        with pytest.raises(BenchError, match="defense 'd' returned") as err:
            contract.defense_output("d", "here", x, bad)
        assert said in str(err.value) and "(in here)" in str(err.value)
    # float error past the ends is no flag; a real excursion is
    assert not contract.out_of_range(-1e-7, 1 + 1e-7)
    assert contract.out_of_range(-0.01, 1.0) and contract.out_of_range(0.0, 1.01)


def test_a_plugins_own_bench_error_passes_as_it_is_and_others_are_blamed():
    def own():
        raise BenchError("my own clear line")

    with pytest.raises(BenchError, match=r"^my own clear line$"):
        contract.blamed("defense", "d", "here", own)
    with pytest.raises(contract.PluginFailed) as err:
        contract.blamed("defense", "d", "cell x", lambda: 1 / 0)
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    assert str(err.value) == "defense 'd' raised ZeroDivisionError: division by zero (in cell x)"


# --- a new user's four plugins (the reproduction), through the CLI --------------------


@pytest.mark.parametrize(
    "plugin, said",
    [
        ("NaNs", "returned 6272 NaN/inf value(s) among 6272"),
        ("Crop", "returned shape (8, 1, 14, 14) float32 on cpu for an input of shape (8, 1, 28, 28)"),
        ("LateNaN", "NaN/inf value(s)"),  # passes the first check, caught on a scored batch
    ],
)
def test_nan_or_wrong_shape_is_one_line_exit_2_and_keeps_the_cells_before(plugin, said, run_args, capsys):
    code, err = run(run_args, capsys, f"none,trust_plugins:{plugin}")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: defense 'trust_plugins:{plugin}' ") and said in err[0]
    assert "the 1 cell(s) finished before it are stored in" in err[0]
    assert [r["defense"] for r in cells(run_args.results)] == ["none"]


def test_a_broken_defense_under_white_box_is_blamed_not_the_attack(run_args, capsys):
    """Under white-box the attack runs through the defense: the first check names the defense
    before any attack sees its NaN."""
    code, err = run(run_args, capsys, "trust_plugins:NaNs", "--threat", "white")
    assert code == 2 and len(err) == 1 and "defense 'trust_plugins:NaNs'" in err[0]
    assert "no cell of this run had finished" in err[0]


def test_values_outside_unit_range_flag_the_cell_in_the_record_and_the_table(run_args, capsys):
    code, _err = run(run_args, capsys, "none,trust_plugins:Stretch")
    assert code == 0
    by = {r["defense"]: r for r in cells(run_args.results)}
    assert "defense-range" in by["trust_plugins:Stretch"]["check_codes"]
    assert any("from -2 to 3" in c for c in by["trust_plugins:Stretch"]["checks"])
    assert "defense-range" not in by["none"]["check_codes"]
    assert "the defense's outputs leave [0,1]" in (run_args.results / "results.md").read_text()
    page = (run_args.results / "site" / "index.html").read_text()  # the row carries a badge saying so
    assert page.count(">contract</span>") == 1 and "outputs leave [0,1] (from -2 to 3)" in page


@pytest.mark.parametrize("plugin, cause", [("Raises", "RuntimeError"), ("LateRaise", "ValueError")])
def test_a_raising_defense_shows_its_traceback_and_the_last_line_names_it(plugin, cause, run_args, capsys):
    code, err = run(run_args, capsys, f"none,trust_plugins:{plugin}")
    assert code == 1
    assert err[0] == "Traceback (most recent call last):" and any("trust_plugins.py" in line for line in err)
    last = err[-1]
    assert last.startswith(f"error: defense 'trust_plugins:{plugin}' raised {cause}")
    assert "fgsm eps=0.3 gray (key " in last
    stored = cells(run_args.results)
    assert [r["defense"] for r in stored] == ["none"]
    assert f"are stored in {run_args.results / 'runs' / stored[0]['run_id']}" in last


# --- attack plugins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plugin, code, said",
    [
        ("NaNAttack", 2, "error: attack 'trust_plugins:NaNAttack' returned"),
        ("CropAttack", 2, "error: attack 'trust_plugins:CropAttack' returned shape"),
        ("RaisingAttack", 1, "error: attack 'trust_plugins:RaisingAttack' raised RuntimeError: attack boom"),
    ],
)
def test_a_broken_attack_is_named(plugin, code, said, run_args, capsys):
    assert main(run_args("--defenses", "none", "--attack", f"trust_plugins:{plugin}", "--eps", "0.3")) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(said) and "eps=0.3" in err[-1]
    assert len(err) == 1 or code == 1


def test_an_l2_attack_beyond_its_ball_is_flagged_though_its_linf_is_small(run_args):
    assert main(run_args("--defenses", "none", "--attack", "trust_plugins:L2TooFar", "--eps", "0.5")) == 0
    (rec,) = cells(run_args.results)
    assert rec["max_linf"] < 0.5 and "exceeds-eps" in rec["check_codes"]
