"""bench.run.probes: the checks a worker computes while it runs a cell (label leaking, labels used to craft)."""
from __future__ import annotations

import torch

from bench.cli import main
from conftest import cells


def test_label_leak_check():
    from bench.run.probes import label_leak
    from bench.core.stats import wilson
    n = 100
    clean_ok = torch.arange(n) >= 20            # 80 right when clean
    dc = clean_ok.clone()                       # the defense fixes none of the 20 when clean
    da = torch.ones(n, dtype=torch.bool)        # and all 20 when attacked
    rec = {"clean_acc": 0.8, "defended_adv_acc": 1.0}
    rec["clean_acc_ci_low"], rec["clean_acc_ci_high"] = wilson(80, n)
    rec["defended_adv_acc_ci_low"], rec["defended_adv_acc_ci_high"] = wilson(100, n)
    found = label_leak(rec, clean_ok, dc, da)
    assert len(found) == 3 and "exceeds the undefended clean accuracy" in found[0]
    rec["defended_adv_acc_ci_low"], rec["defended_adv_acc_ci_high"] = wilson(80, n)
    assert label_leak(rec, clean_ok, dc, clean_ok) == []
    # Crafted against the classifier's own wrong predictions, an attack may "fix" them: no leak.
    assert label_leak({**rec, "attack_labels": "predicted"}, clean_ok, dc, da) == []
    assert len(label_leak({**rec, "attack_labels": "true"}, clean_ok, dc, da)) == 2
    # A defense that is right more often attacked than clean, among images the classifier gets right.
    dc2 = torch.arange(n) >= 30                 # the defense loses 10 clean images …
    assert any("right under attack on 10" in c for c in label_leak(rec, clean_ok, dc2, clean_ok))


def test_predicted_labels_are_used_to_craft(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3",
                         "--attack-labels", "true,predicted".split(",")[1])) == 0
    (r,) = cells(run_args.results)
    assert r["attack_labels"] == "predicted" and r["identity"]["attack_labels"] == "predicted"
    assert main(run_args("--attack-labels", "both")) == 2
