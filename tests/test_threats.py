"""Threat models, sanity checks, Wilson intervals, worst-case rows."""
import math

import torch
from torch import nn

from bench.run.probes import gradient_problem, is_randomized
from bench.cli import main
from bench.core.stats import wilson
from bench.core.threats import BPDA, WhiteBox, attack_model
from conftest import read_records


class Square(nn.Module):
    def forward(self, x):
        return x ** 2


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


def test_checks_fire_on_planted_faults():
    class Detach(nn.Module):  # a defense that zeroes gradients
        def forward(self, x):
            return torch.round(x)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    assert "zero gradients" in gradient_problem(WhiteBox(SumClassifier(), Detach()), x, y)
    assert gradient_problem(BPDA(SumClassifier(), Detach()), x, y) is None
    assert is_randomized(nn.Dropout(0.5).train(), torch.ones(2, 8))
    assert not is_randomized(nn.Identity(), torch.ones(2, 8))


def test_wilson_known_values():
    lo, hi = wilson(8, 10)
    assert math.isclose(lo, 0.4901624, abs_tol=1e-6) and math.isclose(hi, 0.9433178, abs_tol=1e-6)
    lo, hi = wilson(0, 20)
    assert lo == 0 and math.isclose(hi, 0.1611251, abs_tol=1e-6)
    lo, hi = wilson(50, 100)
    assert math.isclose(lo, 0.4038315, abs_tol=1e-6) and math.isclose(hi, 0.5961685, abs_tol=1e-6)


def test_none_is_threat_invariant_with_cis_and_worst_rows(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm,pgd", "--eps", "0.2",
                         "--threat", "gray,white,bpda,bpda-eot", "--eot-samples", "2")) == 0
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
    assert worst["defended_adv_acc"] <= min(by[("fgsm", "gray")]["defended_adv_acc"],
                                            by[("pgd", "gray")]["defended_adv_acc"])


def test_attack_exceeding_eps_is_flagged(run_args, tmp_path, monkeypatch):
    pkg = tmp_path / "bad_attacks.py"
    pkg.write_text(
        "import torch\nfrom attacks.base import AttackPlugin\n\n"
        "class TooBig(AttackPlugin):\n"
        "    '''Adds 2·eps. Example: --attack bad_attacks:TooBig'''\n"
        "    def perturb(self, model, x, y, eps, spec):\n"
        "        return (x + 2 * eps).clamp(0, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(run_args("--attack", "bad_attacks:TooBig", "--eps", "0.1")) == 0
    (rec,) = read_records(run_args.results)
    assert any("exceeds eps" in c for c in rec["checks"])
    assert "exceeds eps" in (run_args.results / "results.md").read_text()


def test_randomness_check_fires_for_defensegan_under_bpda_only(run_args, tmp_path):
    (tmp_path / "dg.toml").write_text("[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n"
                                      "[defenses.defensegan]\niterations = 2\nL = 2\nR = 2\nwidth = 8\n")
    args = run_args("--defenses", "none,defensegan", "--attack", "fgsm", "--eps", "0.3", "--limit", "16",
                    "--threat", "gray,bpda")
    args[args.index("--config") + 1] = str(tmp_path / "dg.toml")
    assert main(args) == 0
    recs = {(r["defense"], r["threat"]): r for r in read_records(run_args.results)}
    assert any("randomized" in c for c in recs[("defensegan", "bpda")]["checks"])
    assert not any("randomized" in c for c in recs[("defensegan", "gray")]["checks"])
    assert recs[("none", "gray")]["checks"] == recs[("none", "bpda")]["checks"] == []
