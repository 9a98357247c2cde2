"""A standard-strength attacker: AutoAttack's components as cells and their per-sample row, the
gradient-masking check, resubmission of randomised defenses, transfer attacks from a surrogate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import read_records

from bench.cli import main
from bench.core import record
from bench.core.errors import BenchError
from bench.core.identity import digest
from bench.run.plan import make_attack

SMALL_AA = (
    "[attacks.aa-apgd-ce]\nsteps = 5\n[attacks.aa-apgd-t]\nsteps = 3\n[attacks.aa-fab-t]\nsteps = 3\n"
    "[attacks.aa-square]\nn_queries = 30\n"
)


def _config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "attacker.toml"
    path.write_text("[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n" + extra)
    return str(path)


def _args(run_args, tmp_path, extra, *flags):
    args = run_args(*flags)
    args[args.index("--config") + 1] = _config(tmp_path, extra)
    return args


def test_aa_individual_stores_one_cell_per_component_and_a_per_sample_row(run_args, tmp_path):
    """Every component on every image (the `aa` of records stored before the cascade; `aa` itself is
    tests/test_cascade.py's)."""
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                SMALL_AA,
                "--defenses",
                "none,bitdepth",
                "--attack",
                "aa-individual",
                "--eps",
                "0.3",
                "--threat",
                "white",
                "--limit",
                "16",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    for defense in ("none", "bitdepth"):
        mine = [r for r in recs if r["defense"] == defense]
        parts = {r["attack"]: r for r in mine if r["kind"] == "cell"}
        assert set(parts) == {"aa-apgd-ce", "aa-apgd-t", "aa-fab-t", "aa-square"}
        assert parts["aa-apgd-ce"]["attack_params"]["steps"] == 5 and parts["aa-square"]["gradient_free"]
        assert not any("cascade" in p["identity"] or "ran_on" in p for p in parts.values())
        (aa,) = [r for r in mine if r["attack"] == "aa-individual"]
        both = np.logical_and.reduce([record.decode(p["correct"]["defended_adv"], 16) for p in parts.values()])
        assert record.decode(aa["correct"]["defended_adv"], 16).tolist() == both.tolist()
        assert aa["kind"] == "worst" and sorted(aa["attack_params"]["attacks"]) == sorted(parts)
        assert aa["defended_adv_acc"] <= min(p["defended_adv_acc"] for p in parts.values())
        assert [r for r in mine if r.kind == "worst"]  # the grid's own worst row, over the same cells


def test_a_suite_is_expanded_not_built():
    with pytest.raises(BenchError, match="suite of aa-apgd-ce"):
        make_attack("aa", None)
    with pytest.raises(BenchError, match="did you mean aa-square"):
        make_attack("aa-squar", None)


def test_the_planted_masking_defense_is_flagged_by_the_gradient_free_attack(run_args, tmp_path):
    extra = '[attacks.pgd]\nsteps = 10\n[attacks."torchattacks:Square"]\nn_queries = 300\nseed = 0\n'
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                extra,
                "--defenses",
                "none,trust_plugins:GradientFlip",
                "--attack",
                "pgd,torchattacks:Square",
                "--eps",
                "0.3",
                "--threat",
                "white",
                "--limit",
                "48",
            )
        )
        == 0
    )
    recs = {(r["defense"], r["attack"]): r for r in read_records(run_args.results)}
    flipped = recs[("trust_plugins:GradientFlip", "pgd")]
    assert any("may be misled by masked gradients" in c for c in flipped["checks"]), flipped["checks"]
    assert not any("masked gradients" in c for c in recs[("none", "pgd")]["checks"])
    md = (run_args.results / "results.md").read_text()
    assert "may be misled by masked gradients" in md  # the report redoes it from the records


def test_resubmission_matches_a_hand_computation(run_args, tmp_path, mnist_setup):
    _, data, clf = mnist_setup
    n, draws = 48, 5
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                "",
                "--defenses",
                "none,trust_plugins:CoinBlank",
                "--attack",
                "fgsm",
                "--eps",
                "0.2",
                "--limit",
                str(n),
                "--resubmit",
                str(draws),
            )
        )
        == 0
    )
    recs = {r["defense"]: r for r in read_records(run_args.results) if r["kind"] == "cell"}
    rec = recs["trust_plugins:CoinBlank"]
    x, y = data.test.x[:n], data.test.y[:n]
    oks = []
    for k in range(draws):
        preds = []
        for a in range(0, n, 32):  # the runner's batches and its seeds for draw k
            parts = ["defense", "clean", a] + ([k] if k else [])
            gen = torch.Generator().manual_seed(int(digest([0, *parts], 8), 16))
            xb = x[a : a + 32]
            keep = torch.rand(len(xb), generator=gen) < 0.5
            with torch.no_grad():
                preds.append(clf(torch.where(keep[:, None, None, None], xb, torch.zeros_like(xb))).argmax(1))
        oks.append((torch.cat(preds) == y).numpy())
    oks = np.stack(oks)
    assert rec["resubmit"] == draws and recs["none"]["resubmit"] == 1  # a deterministic defense answers once
    assert rec["defended_clean_acc"] == pytest.approx(oks.all(0).mean())
    assert rec["defended_clean_acc_expected"] == pytest.approx(oks.mean())
    assert rec["defended_clean_acc_majority"] == pytest.approx((oks.sum(0) * 2 > draws).mean())
    assert rec["defended_clean_acc_first_draw"] == pytest.approx(oks[0].mean())
    assert rec["defended_adv_acc"] < rec["defended_adv_acc_expected"]  # worst over draws is below the mean
    assert rec["identity"]["resubmit"] == draws and "resubmit" not in recs["none"]["identity"]
    assert f"(worst of {draws} draws)" in (run_args.results / "results.md").read_text()  # the table marks it


def test_a_transfer_cell_differs_from_gray_box_and_names_its_surrogate(run_args, tmp_path):
    extra = "[classifiers.mnist-cnn-pgdat]\nepochs = 1\nadv_steps = 1\nadv_ramp_epochs = 0.0\nbatch_size = 128\n"
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                extra,
                "--defenses",
                "none",
                "--attack",
                "fgsm",
                "--eps",
                "0.3",
                "--threat",
                "gray,transfer:mnist-cnn-pgdat",
                "--limit",
                "32",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    gray = next(r for r in recs if r["threat"] == "gray" and r["kind"] == "cell")
    transfer = next(r for r in recs if r["threat"] == "transfer:mnist-cnn-pgdat")
    assert (
        transfer["cell_key"] != gray["cell_key"] and transfer["identity"]["surrogate_hash"] != gray["classifier_hash"]
    )
    assert transfer["correct"]["adv"] != gray["correct"]["adv"]  # other adversarial examples
    (worst,) = [r for r in recs if r.kind == "worst" and r["threat"] == "all"]
    assert "fgsm@transfer:mnist-cnn-pgdat" in worst["attack_params"]["attacks"]
    assert "transfer from mnist-cnn-pgdat" in (run_args.results / "results.md").read_text()


def test_transfer_from_the_target_architecture_trained_from_another_seed(run_args):
    assert (
        main(
            run_args(
                "--defenses",
                "none",
                "--attack",
                "fgsm",
                "--eps",
                "0.3",
                "--threat",
                "gray,transfer:mnist-cnn@seed=1",
                "--limit",
                "32",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    gray = next(r for r in recs if r["threat"] == "gray" and r["kind"] == "cell")
    transfer = next(r for r in recs if r["threat"] == "transfer:mnist-cnn@seed=1")
    assert transfer["identity"]["surrogate_hash"] != gray["classifier_hash"] != ""  # another training
    assert transfer["correct"]["adv"] != gray["correct"]["adv"]
    assert "transfer from mnist-cnn (seed 1)" in (run_args.results / "results.md").read_text()


def test_bad_threat_and_resubmit_are_one_line(run_args, capsys):
    assert main(run_args("--threat", "transfer:")) == 2
    assert "transfer:<classifier>" in capsys.readouterr().err
    assert main(run_args("--threat", "transfer:mnist-cnn@seed=x")) == 2
    assert "unknown threat" in capsys.readouterr().err
    assert main(run_args("--threat", "transfer:nonexistent-net")) == 2
    assert "nonexistent-net" in capsys.readouterr().err
    assert main(run_args("--resubmit", "0")) == 2
    assert "resubmit" in capsys.readouterr().err


def test_square_is_one_cell_for_white_bpda_and_bpda_eot_and_counts_in_each(run_args, tmp_path):
    """Gradient-free: BPDA and BPDA+EOT give it the white-box model's outputs, so it is computed
    once, and every threat's aa-individual row still has all four components; FAB-T (no EOT form of
    its own) attacks the mean of the draws' logits of the randomised defense under bpda-eot. (A
    cascade's Square stage is one cell per threat: tests/test_cascade.py.)"""
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                SMALL_AA,
                "--defenses",
                "none,gaussian",
                "--attack",
                "aa-individual",
                "--eps",
                "0.3",
                "--threat",
                "white,bpda,bpda-eot",
                "--eot-samples",
                "2",
                "--limit",
                "8",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    square = [r for r in recs if r["attack"] == "aa-square"]
    assert sorted((r["defense"], r["threat"]) for r in square) == [("gaussian", "white"), ("none", "white")]
    fab = {(r["defense"], r["threat"]): r for r in recs if r["attack"] == "aa-fab-t"}
    assert fab[("gaussian", "bpda-eot")]["eot_samples"] == 2 and fab[("none", "bpda-eot")]["eot_samples"] == 1
    for defense in ("none", "gaussian"):
        for threat in ("white", "bpda", "bpda-eot"):
            (aa,) = [
                r for r in recs if r["attack"] == "aa-individual" and r["defense"] == defense and r["threat"] == threat
            ]
            parts = [r for r in recs if r["cell_key"] in aa["identity"]["attack_params"]["cells"]]
            assert sorted(r["attack"] for r in parts) == ["aa-apgd-ce", "aa-apgd-t", "aa-fab-t", "aa-square"]
            assert {r["threat"] for r in parts} == ({"white"} if threat == "white" else {threat, "white"})
            assert aa["identity"].get("eot_samples") == (
                None if threat != "bpda-eot" else 2 if defense == "gaussian" else 1
            )


def test_the_masking_check_finds_squares_white_box_cell_under_bpda():
    """Square's one cell (white-box) is the witness for gradient attacks under BPDA and BPDA+EOT
    too (Threat.query), not under gray-box (another model attacked)."""
    from bench.analysis.checks import MASKED, versus_gradient_free

    def rec(attack, threat, acc, lo, hi, eot=None):
        ident = {
            "data": {"dataset": "d"},
            "n": 64,
            "defense": "x",
            "attack": attack,
            "threat": threat,
            "eot_samples": eot,
            "eps": 0.3,
        }
        return {
            "identity": ident,
            "attack": attack,
            "threat": threat,
            "eps": 0.3,
            "iterative": True,
            "gradient_free": attack == "aa-square",
            "defended_adv_acc": acc,
            "defended_adv_acc_ci_low": lo,
            "defended_adv_acc_ci_high": hi,
            "adv_acc": acc,
            "adv_acc_ci_low": lo,
            "adv_acc_ci_high": hi,
            "checks": [],
        }

    square = rec("aa-square", "white", 0.1, 0.05, 0.2)
    for threat, eot, flagged in (
        ("bpda", None, True),
        ("bpda-eot", 1, True),
        ("white", None, True),
        ("gray", None, False),
    ):
        found = versus_gradient_free(rec("pgd", threat, 0.8, 0.7, 0.9, eot), [square])
        assert [c.code for c in found] == (["masked-gradients"] if flagged else []), (threat, found)
        assert all(MASKED in c.message for c in found)
