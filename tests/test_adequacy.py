"""Attack adequacy (bench.analysis.adequacy, bench.run.sweep): budget curves, convergence flags, PGD restarts, the sweep command."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import read_records

from bench.analysis.adequacy import annotate, curves
from bench.analysis.frame import frame
from bench.cli import main
from bench.core.stats import wilson


def cell(acc, steps, *, n=1000, restarts=1, eot=None, defense="d", t=1.0, threat="white"):
    k = round(acc * n)
    lo, hi = wilson(k, n)
    params = {"steps": steps, "alpha": 0.75 / steps, "random_start": True}
    if restarts > 1:
        params["restarts"] = restarts
    return dict(
        dataset="mnist",
        classifier="mnist-cnn",
        classifier_hash="c0",
        data_fingerprint="d0",
        defense=defense,
        defense_params={},
        threat=threat,
        attack="pgd",
        attack_params=params,
        attack_labels="true",
        norm="Linf",
        eps=0.3,
        n=n,
        seed=0,
        eot_samples=eot,
        time=t,
        cell_key=f"{defense}-{steps}-{restarts}-{eot}-{n}-{threat}",
        run_id="r1",
        clean_acc=0.99,
        adv_acc=0.0,
        defended_clean_acc=0.98,
        defended_adv_acc=k / n,
        defended_adv_acc_ci_low=lo,
        defended_adv_acc_ci_high=hi,
        device="cpu",
        defense_ms_per_sample=0.1,
    )


def flags_by(df):
    flags = annotate(df)
    return {
        (r["defense"], r["n"], r["attack_params"]["steps"], r["attack_params"].get("restarts", 1)): flags[i]
        for i, r in df.iterrows()
    }


def test_converged_curve_flags_only_cells_below_the_converged_budget():
    # accuracy falls until 40 steps, then stays within the CI half-width (~0.03 at n = 1000)
    sweep = [cell(a, s) for a, s in ((0.60, 10), (0.45, 20), (0.40, 40), (0.39, 100), (0.385, 200))]
    planted = cell(0.50, 20, n=500, t=2.0)  # a main-table cell at another n, 20 steps: under budget
    enough = cell(0.41, 100, n=500, t=2.0)
    other = cell(0.9, 10, defense="other")  # a different defense: no curve speaks for it
    df = frame([*sweep, planted, enough, other])
    (curve,) = [c for c in curves(df) if c.n == 1000]
    (axis,) = curve.axes
    assert axis.name == "steps" and axis.converged and axis.converged_at == 40
    assert axis.last == (100, 200) and axis.drop == pytest.approx(0.005)
    flags = flags_by(df)
    assert flags[("d", 1000, 10, 1)] == "under-budget: steps 10 < 40 needed (n=1000)"
    assert flags[("d", 1000, 20, 1)].startswith("under-budget: steps 20 < 40")
    assert flags[("d", 500, 20, 1)].startswith("under-budget: steps 20 < 40")  # the planted cell
    assert flags[("d", 1000, 40, 1)] == flags[("d", 1000, 200, 1)] == flags[("d", 500, 100, 1)] == ""
    assert flags[("other", 1000, 10, 1)] == ""


def test_last_doubling_that_still_lowers_accuracy_is_not_converged():
    df = frame([cell(a, s) for a, s in ((0.60, 10), (0.50, 20), (0.45, 40), (0.44, 100), (0.35, 200))])
    (curve,) = curves(df)
    (axis,) = curve.axes
    hw = (wilson(350, 1000)[1] - wilson(350, 1000)[0]) / 2
    assert not axis.converged and axis.converged_at is None
    assert axis.last == (100, 200) and axis.drop == pytest.approx(0.09) and axis.half_width == pytest.approx(hw)
    assert all(f.startswith("under-budget: not converged (steps 100→200") for f in annotate(df))


def test_restarts_and_eot_axes():
    recs = [cell(a, s) for a, s in ((0.50, 10), (0.41, 20), (0.40, 40))]
    recs.append(cell(0.30, 40, restarts=5))  # restarts 1 → 5 at 40 steps still drops
    df = frame(recs)
    (curve,) = curves(df)
    axes = {a.name: a for a in curve.axes}
    assert set(axes) == {"steps", "restarts"}
    assert axes["steps"].converged and axes["steps"].converged_at == 20
    assert not axes["restarts"].converged and axes["restarts"].fixed == {"steps": 40, "eot": 1}
    flags = flags_by(df)
    assert "not converged (restarts 1→5" in flags[("d", 1000, 40, 5)]
    assert "steps 10 < 20" in flags[("d", 1000, 10, 1)]

    eot = frame([cell(a, 40, eot=e, threat="bpda-eot") for a, e in ((0.6, 1), (0.5, 4), (0.49, 16))])
    (curve,) = curves(eot)
    (axis,) = curve.axes
    assert axis.name == "eot" and axis.converged and axis.converged_at == 4


def test_sweep_plan_puts_restarts_and_eot_at_the_converged_steps():
    from bench.run.sweep import converged_steps, later_points

    recs = [cell(a, s) for a, s in ((0.60, 10), (0.45, 20), (0.40, 40), (0.39, 100), (0.385, 200))]
    recs += [cell(a, s, defense="e") for a, s in ((0.60, 10), (0.50, 20), (0.45, 40), (0.44, 100), (0.35, 200))]
    recs += [cell(a, s, defense="r", threat="bpda-eot", eot=8) for a, s in ((0.5, 10), (0.5, 20))]
    conv = converged_steps(recs, [10, 20, 40, 100, 200])
    assert conv == {
        ("mnist", "d", "white", "0.3"): 40,
        ("mnist", "e", "white", "0.3"): 200,
        ("mnist", "r", "bpda-eot", "0.3"): 10,
    }
    pts = later_points(conv, {"0.3": 0.3}, True, {"r"}, [1, 5], [1, 4, 16], 8)
    got = {(p["threat"][0], p["steps"], p["restarts"], p["eot_samples"], tuple(p["defenses"])) for p in pts}
    assert got == {
        ("white", 40, 5, 8, ("d",)),
        ("white", 200, 5, 8, ("e",)),
        ("bpda-eot", 10, 5, 8, ("r",)),
        ("bpda-eot", 10, 1, 1, ("r",)),
        ("bpda-eot", 10, 1, 4, ("r",)),
        ("bpda-eot", 10, 1, 16, ("r",)),
    }
    assert all(p["eps"] == 0.3 and p["dataset"] == "mnist" for p in pts)
    # an attack without restarts (bim), a deterministic defense: nothing after the steps sweep
    assert later_points(conv, {"0.3": 0.3}, False, set(), [1, 5], [1, 4, 16], 8) == []


def test_pgd_restarts_keep_the_first_success_and_only_add_strength():
    from attacks.pgd import PGD

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = torch.rand(64, 1, 28, 28)
    y = model(x).argmax(1)
    spec = SimpleNamespace(shape=(1, 28, 28))
    assert "restarts" not in PGD().effective_params(0.3, spec)  # stored keys unchanged at 1
    assert PGD(restarts=3).effective_params(0.3, spec)["restarts"] == 3
    eps = 0.02
    torch.manual_seed(1)
    once = PGD(steps=2, restarts=1).perturb(model, x, y, eps, spec)
    torch.manual_seed(1)
    thrice = PGD(steps=2, restarts=3).perturb(model, x, y, eps, spec)
    fooled = lambda adv: model(adv).argmax(1) != y
    with torch.no_grad():
        assert (thrice - x).abs().max() <= eps + 1e-6
        assert fooled(thrice).sum() >= fooled(once).sum()
        assert torch.equal(thrice[fooled(once)], once[fooled(once)])  # the first success is kept
    with pytest.raises(ValueError, match="random_start"):
        PGD(restarts=2, random_start=False)


PLANTED_TOML = """
[run]
offline = true
batch_size = 100
[classifier]
epochs = 1
batch_size = 128
# A fixed small step: each doubling of the steps still moves the images, so the last doubling
# lowers accuracy well beyond the CI half-width — a planted under-budget sweep.
[attacks.pgd]
alpha = 0.01
random_start = false
"""


def test_sweep_command_stores_records_plots_and_flags_a_planted_under_budget_cell(tmp_path, cache_dir, capsys):
    cfg = tmp_path / "planted.toml"
    cfg.write_text(PLANTED_TOML)
    results = tmp_path / "results"
    args = [
        "adequacy",
        "--config",
        str(cfg),
        "--cache-dir",
        str(cache_dir),
        "--results-dir",
        str(results),
        "--defenses",
        "none",
        "--attack",
        "pgd",
        "--threat",
        "white",
        "--eps",
        "0.3",
        "--limit",
        "200",
        "--steps",
        "1,2,4,8",
        "--restarts",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    recs = read_records(results)
    assert sorted(r["attack_params"]["steps"] for r in recs) == [1, 2, 4, 8]
    assert len(list(results.glob("runs/*/records.jsonl"))) == 4  # one ordinary run per budget
    assert "NOT converged: steps 4→8" in out
    assert list((results / "plots").glob("adequacy_mnist_mnist-cnn_white_pgd_0.3_n200.png"))
    md = (results / "results.md").read_text()
    assert "## Attack adequacy" in md and "† Attack budget below the converged one" in md
    table = pd.read_csv(results / "results.csv")
    assert table["adequacy"].str.startswith("under-budget: not converged (steps 4→8").all()
    # The same command again computes nothing: every cell is taken from the store.
    assert main(args) == 0
    assert "computed 0 cell(s)" in capsys.readouterr().out
    assert len(read_records(results)) == 4


def test_sweep_errors(tmp_path, capsys):
    assert main(["adequacy", "--attack", "fgsm", "--results-dir", str(tmp_path), "--offline"]) == 2
    assert "no steps parameter" in capsys.readouterr().err
    assert main(["adequacy", "--attack", "bim", "--restarts", "1,5", "--results-dir", str(tmp_path)]) == 2
    assert "no restarts parameter" in capsys.readouterr().err
    assert main(["adequacy", "--steps", "0,10", "--results-dir", str(tmp_path)]) == 2
    assert "invalid --steps" in capsys.readouterr().err


def test_a_cell_beyond_an_unconverged_sweep_is_not_flagged():
    sweep = [cell(a, s) for a, s in ((0.60, 10), (0.50, 20), (0.40, 40))]
    df = frame([*sweep, cell(0.3, 400, n=500, t=2.0)])
    flags = flags_by(df)
    assert flags[("d", 1000, 40, 1)].startswith("under-budget: not converged (steps 20→40")
    assert flags[("d", 500, 400, 1)] == ""


def test_sweep_runs_restarts_at_the_converged_steps(run_args, capsys):
    assert (
        main(
            [
                "adequacy",
                *run_args(
                    "--defenses",
                    "none",
                    "--attack",
                    "pgd",
                    "--threat",
                    "white",
                    "--eps",
                    "0.3",
                    "--steps",
                    "1,2",
                    "--restarts",
                    "1,2",
                ),
            ]
        )
        == 0
    )
    recs = read_records(run_args.results)
    got = sorted((r["attack_params"]["steps"], r["attack_params"].get("restarts", 1)) for r in recs)
    conv = next(c for c in curves(frame(recs)) if c.n == 48)
    steps_axis = next(a for a in conv.axes if a.name == "steps")
    at = steps_axis.converged_at if steps_axis.converged else 2
    assert got == sorted([(1, 1), (2, 1), (at, 2)])
    assert "restarts/EOT 1/1" in capsys.readouterr().out


def test_match_key_reads_numpy_scalars_as_their_values():
    import numpy as np

    from bench.analysis.adequacy import match_key

    row = pd.Series(cell(0.5, 10), dtype=object)
    as_numpy = row.copy()
    as_numpy["seed"], as_numpy["n"], as_numpy["eps"] = np.int64(0), np.int64(1000), np.float64(0.3)
    assert match_key(row) == match_key(as_numpy)


@pytest.mark.parametrize("threat", ["white", "bpda", "bpda-eot"])
def test_adequacy_notes_reach_the_table_of_every_threat(threat):
    # The note is looked up by the paper-view table's title: both must name a threat the same way.
    from bench.render.adequacy import paper_notes
    from bench.render.report import paper_view

    sweep = [cell(a, s, threat=threat) for a, s in ((0.60, 10), (0.45, 20), (0.40, 40), (0.39, 100), (0.385, 200))]
    df = frame(sweep)
    notes = paper_notes(df, annotate(df))
    titles = [t for t, _ in paper_view(df)]
    assert notes and set(notes) <= set(titles)
