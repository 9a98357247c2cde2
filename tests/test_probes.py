"""bench.run.probes: the checks a worker computes while it runs a cell (label leaking, labels used to craft)."""

from __future__ import annotations

import torch
from conftest import cells, read_records
from torch import nn

from bench.cli import main
from bench.core.threats import BPDA, WhiteBox
from bench.run.probes import gradient_problem, is_randomized


def test_label_leak_check():
    from bench.core.stats import wilson
    from bench.run.probes import label_leak

    n = 100
    clean_ok = torch.arange(n) >= 20  # 80 right when clean
    dc = clean_ok.clone()  # the defense fixes none of the 20 when clean
    da = torch.ones(n, dtype=torch.bool)  # and all 20 when attacked
    rec = {"clean_acc": 0.8, "defended_adv_acc": 1.0}
    rec["clean_acc_ci_low"], rec["clean_acc_ci_high"] = wilson(80, n)
    rec["defended_adv_acc_ci_low"], rec["defended_adv_acc_ci_high"] = wilson(100, n)
    found = label_leak(rec, clean_ok, dc, da)
    assert len(found) == 3 and "exceeds the undefended clean accuracy" in found[0].message
    assert {c.code for c in found} == {"label-leak"}
    rec["defended_adv_acc_ci_low"], rec["defended_adv_acc_ci_high"] = wilson(80, n)
    assert label_leak(rec, clean_ok, dc, clean_ok) == []
    # Crafted against the classifier's own wrong predictions, an attack may "fix" them: no leak.
    assert label_leak({**rec, "attack_labels": "predicted"}, clean_ok, dc, da) == []
    assert len(label_leak({**rec, "attack_labels": "true"}, clean_ok, dc, da)) == 2
    # A defense that is right more often attacked than clean, among images the classifier gets right.
    dc2 = torch.arange(n) >= 30  # the defense loses 10 clean images …
    assert any("right under attack on 10" in c.message for c in label_leak(rec, clean_ok, dc2, clean_ok))


def test_predicted_labels_are_used_to_craft(run_args):
    assert (
        main(
            run_args(
                "--defenses",
                "none",
                "--attack",
                "fgsm",
                "--eps",
                "0.3",
                "--attack-labels",
                "true,predicted".split(",")[1],
            )
        )
        == 0
    )
    (r,) = cells(run_args.results)
    assert r["attack_labels"] == "predicted" and r["identity"]["attack_labels"] == "predicted"
    assert main(run_args("--attack-labels", "both")) == 2


def test_no_randomness_warning_for_a_gradient_free_attack_on_a_randomised_defense(run_args, tmp_path):
    """EOT averages gradients: a gradient-free attack has none, so white-box Square on `gaussian`
    is not told to use bpda-eot (PGD still is)."""
    cfg = tmp_path / "sq.toml"
    cfg.write_text(
        "[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n"
        '[attacks."torchattacks:Square"]\nn_queries = 20\nseed = 0\n[attacks.pgd]\nsteps = 3\n'
    )
    args = run_args(
        "--defenses",
        "gaussian",
        "--attack",
        "pgd,torchattacks:Square",
        "--eps",
        "0.3",
        "--threat",
        "white",
        "--limit",
        "16",
    )
    args[args.index("--config") + 1] = str(cfg)
    assert main(args) == 0
    recs = {r["attack"]: r for r in read_records(run_args.results) if r["kind"] == "cell"}
    assert any("randomized defense under white" in c for c in recs["pgd"]["checks"])
    assert not any("randomized defense under white" in c for c in recs["torchattacks:Square"]["checks"])


def test_checks_fire_on_planted_faults():
    class Detach(nn.Module):  # a defense that zeroes gradients
        def forward(self, x):
            return torch.round(x)

    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    found = gradient_problem(WhiteBox(SumClassifier(), Detach()), x, y)
    assert found.code == "zero-gradient" and "zero gradients" in found.message
    assert gradient_problem(BPDA(SumClassifier(), Detach()), x, y) is None
    assert is_randomized(nn.Dropout(0.5).train(), torch.ones(2, 8))
    assert not is_randomized(nn.Identity(), torch.ones(2, 8))


class SumClassifier(nn.Module):
    """Two logits: the image's sum and its negation (a gradient everywhere)."""

    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([s, -s], 1)
