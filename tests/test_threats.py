"""Threat models, sanity checks, Wilson intervals, worst-case rows."""

import math

import numpy as np
import torch
from conftest import cells, read_records
from torch import nn

from bench.cli import main
from bench.core.stats import wilson
from bench.core.threats import BPDA, WhiteBox, attack_model


class Square(nn.Module):
    def forward(self, x):
        return x**2


class SumClassifier(nn.Module):
    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([s, -s], 1)


def test_bpda_forward_is_the_defense_and_backward_the_identity():
    clf, d = SumClassifier(), Square()
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    bpda = BPDA(clf, d)
    assert torch.allclose(bpda(x), clf(d(x)))
    bpda(x)[:, 0].sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # d(sum)/dx through the identity
    x.grad = None
    WhiteBox(clf, d)(x)[:, 0].sum().backward()
    assert torch.allclose(x.grad, 2 * x.detach())  # the true Jacobian of x²


def test_gray_sees_the_bare_classifier():
    assert attack_model("gray", SumClassifier(), Square()).__class__ is SumClassifier


def test_wrappers_keep_the_classifier_in_eval_mode(mnist_setup):
    import torchattacks

    from defenses.none import NoDefense

    _, data, clf = mnist_setup
    for threat in ("white", "bpda"):
        torchattacks.FGSM(attack_model(threat, clf, NoDefense()), eps=0.1)(data.test.x[:4], data.test.y[:4])
        assert not clf.training


def test_wilson_known_values():
    lo, hi = wilson(8, 10)
    assert math.isclose(lo, 0.4901624, abs_tol=1e-6) and math.isclose(hi, 0.9433178, abs_tol=1e-6)
    lo, hi = wilson(0, 20)
    assert lo == 0 and math.isclose(hi, 0.1611251, abs_tol=1e-6)
    lo, hi = wilson(50, 100)
    assert math.isclose(lo, 0.4038315, abs_tol=1e-6) and math.isclose(hi, 0.5961685, abs_tol=1e-6)


def test_none_is_threat_invariant_with_cis_and_worst_rows(run_args):
    assert (
        main(
            run_args(
                "--defenses",
                "none",
                "--attack",
                "fgsm,pgd",
                "--eps",
                "0.2",
                "--threat",
                "gray,white,bpda,bpda-eot",
                "--eot-samples",
                "2",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    by = {(r["attack"], r["threat"]): r for r in recs}
    assert len(recs) == 8 + 4 + 1  # 2 attacks × 4 threats + a worst row per threat + one over all threats
    for attack in ("fgsm", "pgd"):
        accs = {by[(attack, t)]["defended_adv_acc"] for t in ("gray", "white", "bpda", "bpda-eot")}
        assert len(accs) == 1
    for r in recs:
        assert r["defended_adv_acc_ci_low"] <= r["defended_adv_acc"] <= r["defended_adv_acc_ci_high"]
        assert r["checks"] == []
    assert by[("worst", "all")]["defended_adv_acc"] == min(r["defended_adv_acc"] for r in recs)
    worst = by[("worst", "gray")]
    assert worst["defended_adv_acc"] <= min(
        by[("fgsm", "gray")]["defended_adv_acc"], by[("pgd", "gray")]["defended_adv_acc"]
    )


def test_attack_exceeding_eps_is_flagged(run_args, tmp_path, monkeypatch):
    pkg = tmp_path / "bad_attacks.py"
    pkg.write_text(
        "import torch\nfrom attacks.base import AttackPlugin\n\n"
        "class TooBig(AttackPlugin):\n"
        "    '''Adds 2·eps. Example: --attack bad_attacks:TooBig'''\n"
        "    def perturb(self, model, x, y, eps, spec):\n"
        "        return (x + 2 * eps).clamp(0, 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(run_args("--attack", "bad_attacks:TooBig", "--eps", "0.1")) == 0
    (rec,) = read_records(run_args.results)
    assert any("exceeds eps" in c for c in rec["checks"])
    assert "exceeds eps" in (run_args.results / "results.md").read_text()


def test_randomness_check_fires_for_defensegan_under_bpda_only(run_args, tmp_path):
    (tmp_path / "dg.toml").write_text(
        "[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n"
        "[defenses.defensegan]\niterations = 2\nL = 2\nR = 2\nwidth = 8\n"
    )
    args = run_args(
        "--defenses", "none,defensegan", "--attack", "fgsm", "--eps", "0.3", "--limit", "16", "--threat", "gray,bpda"
    )
    args[args.index("--config") + 1] = str(tmp_path / "dg.toml")
    assert main(args) == 0
    recs = {(r["defense"], r["threat"]): r for r in read_records(run_args.results)}
    assert any("randomized" in c for c in recs[("defensegan", "bpda")]["checks"])
    assert not any("randomized" in c for c in recs[("defensegan", "gray")]["checks"])
    assert recs[("none", "gray")]["checks"] == recs[("none", "bpda")]["checks"] == []


# --- moved from the former tests/test_trust.py ---------------------------------------


def test_an_in_place_defense_corrupts_nothing(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    alone = {r["attack"]: r for r in cells(run_args.results)}["fgsm"]
    other = run_args.results.parent / "other"
    args = run_args("--defenses", "trust_plugins:InPlace,none", "--attack", "fgsm", "--eps", "0.3")
    args[args.index("--results-dir") + 1] = str(other)
    assert main(args) == 0
    by = {r["defense"]: r for r in cells(other)}
    assert by["none"]["clean_acc"] == alone["clean_acc"]
    assert by["none"]["defended_clean_acc"] == alone["defended_clean_acc"]
    assert by["none"]["defended_adv_acc"] == alone["defended_adv_acc"]
    inplace = by["trust_plugins:InPlace"]
    assert any("wrote into its input" in c for c in inplace["checks"])
    assert inplace["defended_clean_acc"] < 0.5  # scored on what it returned, not as an identity


def test_white_and_bpda_differ_from_gray_through_a_real_defense(run_args):
    assert (
        main(
            run_args(
                "--defenses", "trust_plugins:Blur", "--attack", "fgsm", "--eps", "0.2", "--threat", "gray,white,bpda"
            )
        )
        == 0
    )
    adv = {}
    for r in cells(run_args.results):
        with np.load(run_args.results / r["samples"]) as z:
            adv[r["threat"]] = z["adv"]
    assert not np.array_equal(adv["gray"], adv["white"])
    assert not np.array_equal(adv["gray"], adv["bpda"])
    assert not np.array_equal(adv["white"], adv["bpda"])


def test_randomness_warning_only_where_the_threat_ignores_it(run_args):
    assert (
        main(
            run_args(
                "--defenses",
                "trust_plugins:Jitter",
                "--attack",
                "fgsm,pgd",
                "--eps",
                "0.2",
                "--threat",
                "gray,bpda,bpda-eot",
                "--eot-samples",
                "2",
            )
        )
        == 0
    )
    for r in read_records(run_args.results):
        warned = any("randomized" in c for c in r["checks"])
        # the worst over all threats carries its parts' warnings: one of them is a bpda cell
        assert warned == (r["threat"] in ("bpda", "all")), (r["attack"], r["threat"], r["checks"])


class Alternating(nn.Module):
    """A randomized toy defense: x + c and x − c on alternate calls."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c, self.calls = c, 0

    def forward(self, x):
        self.calls += 1
        return x + (self.c if self.calls % 2 else -self.c)


class AbsLogit(nn.Module):
    """logits [5·|x − 0.4|, 0] of a one-pixel image."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.tensor(0.4), requires_grad=False)

    def forward(self, x):
        s = 5 * (x.flatten(1) - self.anchor).abs().sum(1, keepdim=True)
        return torch.cat([s, torch.zeros_like(s)], 1)


def test_bpda_eot_averages_gradients_not_logits():
    from attacks.fgsm import FGSM
    from bench.core.threats import BPDA

    x, y, c, eps = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0]), 0.2, 0.1
    clf = AbsLogit()
    # By hand: draws at 0.7 and 0.3; dCE/dx' = -(1 - σ(h)) h'(x') with h' = +5 and −5.
    sig = torch.sigmoid
    mean_grad = -0.5 * ((1 - sig(torch.tensor(1.5))) * 5 + (1 - sig(torch.tensor(0.5))) * -5)
    assert mean_grad > 0
    adv = FGSM().perturb_eot(BPDA(clf, Alternating(c)), x, y, eps, None, 2)
    assert torch.allclose(adv, x + eps * torch.sign(mean_grad))
    # Averaging the logits instead would see h' cancel and not move at all.
    xr = x.clone().requires_grad_(True)
    logits = (clf(xr + c) + clf(xr - c)) / 2
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), xr)
    assert g.abs().max() == 0


def test_an_attack_without_an_eot_form_attacks_the_mean_of_the_draws_logits():
    from bench.core.threats import MeanOverDraws
    from bench.run.plan import make_attack

    model = BPDA(AbsLogit(), Alternating(0.2))
    x = torch.full((1, 1, 1, 1), 0.5)
    # Draws at 0.7 and 0.3: logits [1.5, 0] and [0.5, 0], mean [1.0, 0].
    assert torch.allclose(MeanOverDraws(model, 2)(x), torch.tensor([[1.0, 0.0]]))
    fab = make_attack("aa-fab-t", {"steps": 2})
    built = fab.build_eot(model, 0.1, type("S", (), {"num_classes": 2})(), 4)
    assert isinstance(built.model, MeanOverDraws) and built.model.draws == 4


def test_one_draw_bpda_examples_are_crafted_once_and_equal_a_lone_computation(run_args, tmp_path, monkeypatch):
    """BPDA, BPDA+EOT on a deterministic defense and white-box on a non-differentiable one (JPEG)
    share their examples (one craft per defense); each cell equals the cell computed on its own."""
    from bench.run.worker import Worker

    calls = []
    craft = Worker.craft
    monkeypatch.setattr(Worker, "craft", lambda self, *a, **k: calls.append(a[3].threat) or craft(self, *a, **k))
    assert (
        main(
            run_args(
                "--defenses",
                "median,jpeg",
                "--attack",
                "pgd",
                "--eps",
                "0.3",
                "--limit",
                "16",
                "--threat",
                "white,bpda,bpda-eot",
            )
        )
        == 0
    )
    # median: white-box, then BPDA once for bpda and bpda-eot; JPEG: BPDA once, in the white group
    assert sorted(calls) == ["bpda", "white", "white"]
    together = {(r["defense"], r["threat"]): r for r in cells(run_args.results)}
    assert len(together) == 6
    alone = tmp_path / "alone"
    args = run_args(
        "--defenses", "median,jpeg", "--attack", "pgd", "--eps", "0.3", "--limit", "16", "--threat", "bpda-eot"
    )
    args[args.index("--results-dir") + 1] = str(alone)
    assert main(args) == 0
    for r in cells(alone):
        twin = together[(r["defense"], "bpda-eot")]
        assert r["cell_key"] == twin["cell_key"] and r["correct"] == twin["correct"]


def test_the_mean_over_draws_keeps_the_mode_it_wraps():
    """torchattacks puts a model found in train mode back into train mode after an attack: a
    wrapper born in train mode would switch the classifier's dropout on for the cell's scoring."""
    from bench.core.threats import MeanOverDraws

    clf = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(1, 2))
    assert not MeanOverDraws(BPDA(clf, Alternating(0.2)).eval(), 2).training
    assert MeanOverDraws(BPDA(clf, Alternating(0.2)).train(), 2).training


def test_shared_bpda_examples_never_cross_datasets(run_args, tmp_path, monkeypatch):
    """Two datasets with the same attack, eps and n: each crafts its own BPDA examples."""
    from bench.run.worker import Worker

    calls = []
    craft = Worker.craft
    monkeypatch.setattr(Worker, "craft", lambda self, *a, **k: calls.append(a[2].test.source) or craft(self, *a, **k))
    g = np.random.default_rng(0)
    path = tmp_path / "other.npz"
    np.savez(
        path,
        x_train=g.random((64, 1, 28, 28)).astype(np.float32),
        y_train=np.arange(64) % 10,
        x_test=g.random((16, 1, 28, 28)).astype(np.float32),
        y_test=np.arange(16) % 10,
    )
    assert (
        main(
            run_args(
                "--dataset",
                f"mnist,npz:{path}",
                "--defenses",
                "median",
                "--attack",
                "fgsm",
                "--eps",
                "0.2",
                "--limit",
                "16",
                "--threat",
                "bpda,bpda-eot",
            )
        )
        == 0
    )
    assert len(calls) == 2 and len(set(calls)) == 2
    adv = {}
    for r in cells(run_args.results):
        with np.load(run_args.results / r["samples"]) as z:
            adv[(r["dataset"], r["threat"])] = z["adv"]
    (mine,) = {d for d, _ in adv} - {"mnist"}
    assert np.array_equal(adv[(mine, "bpda")], adv[(mine, "bpda-eot")])
    assert not np.array_equal(adv[("mnist", "bpda")], adv[(mine, "bpda")])
