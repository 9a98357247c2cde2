"""Paired significance (bench.analysis.paired, bench.render.paired): exact McNemar, Holm, Newcombe's paired interval, report hooks."""

import json
import math

import numpy as np
import pytest
import torch

from bench.analysis.frame import frame
from bench.analysis.paired import decode, holm, mcnemar_exact, newcombe_paired, pairs
from bench.cli import main
from bench.core.record import accuracies as _accuracies
from bench.core.record import decode_tensor as unbits
from bench.core.record import encode as bits


def record(defense, ok, *, attack="fgsm", params=None, threat="gray", key=None, t=1.0):
    """A stored cell whose per-sample outcomes under attack are ``ok`` (clean: all correct)."""
    ok = torch.as_tensor(np.asarray(ok, dtype=bool))
    n = len(ok)
    ones = torch.ones(n, dtype=torch.bool)
    rec = dict(
        dataset="mnist",
        classifier="mnist-cnn",
        classifier_hash="c0",
        data_fingerprint="d0",
        test_source="t",
        defense=defense,
        defense_params={},
        threat=threat,
        attack=attack,
        attack_params=params or {"steps": 1},
        attack_labels="true",
        norm="Linf",
        eps=0.3,
        n=n,
        seed=0,
        device="cpu (test)",
        defense_ms_per_sample=0.1,
        time=t,
        run_id="r1",
        cell_key=key or f"{defense}-{attack}-{json.dumps(params)}-{threat}",
        correct={"clean": bits(ones), "adv": bits(ok), "defended_clean": bits(ones), "defended_adv": bits(ok)},
    )
    rec.update(_accuracies({"clean": ones, "adv": ok, "defended_clean": ones, "defended_adv": ok}))
    return rec


def write(results, records):
    run = results / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def outcomes(both, only_a, only_b, neither):
    """Per-sample outcomes of A and B with the given 2×2 counts."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return a, b


def test_exact_mcnemar_against_a_hand_computed_case():
    # 12 images only A survives, 2 only B: under H0 each discordant image is a fair coin, so
    # p = 2·P(X ≤ 2), X ~ Bin(14, 1/2) = 2·(C(14,0) + C(14,1) + C(14,2)) / 2^14 = 2·106/16384.
    assert mcnemar_exact(12, 2) == pytest.approx(212 / 16384, rel=1e-12)
    assert mcnemar_exact(2, 12) == pytest.approx(212 / 16384, rel=1e-12)
    # 5 vs 0: p = 2·(1/2)^5 = 1/16; balanced discordance: p = 1; no discordant image: p = 1.
    assert mcnemar_exact(5, 0) == pytest.approx(1 / 16, rel=1e-12)
    assert mcnemar_exact(7, 7) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_newcombe_paired_interval_matches_published_values():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8:
    # Cavo et al. (2012), table [[59, 6], [16, 80]]: -0.0621 (95% CI -0.1186 to -0.0046).
    lo, hi = newcombe_paired(59, 6, 16, 80)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)
    lo, hi = newcombe_paired(1, 0, 0, 1)  # the same book's degenerate case: ±0.5734
    assert (round(lo, 4), round(hi, 4)) == (-0.5734, 0.5734)
    assert all(math.isnan(v) for v in newcombe_paired(0, 0, 0, 0))


def test_holm_step_down():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_decode_matches_the_stored_bitmaps():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 100):
        mask = torch.as_tensor(rng.random(n) < 0.5)
        assert decode(bits(mask), n).tolist() == unbits(bits(mask), n).tolist() == mask.tolist()


def test_pairs_only_on_shared_cells_with_holm_per_table():
    a, b = outcomes(30, 12, 2, 6)
    c = [1] * 25 + [0] * 25
    recs = [
        record("a", a),
        record("b", b),
        record("c", c),
        record("a", a, params={"steps": 5}),  # another attack budget: its own table
        record("d", b, params={"steps": 5}),
    ]
    found = pairs(frame(recs))
    tables = {}
    for p in found:
        tables.setdefault(p.group, []).append(p)
    assert sorted(len(v) for v in tables.values()) == [1, 3]
    ab = next(p for p in found if (p.a, p.b) == ("a", "b"))
    assert (ab.both, ab.only_a, ab.only_b, ab.neither, ab.n) == (30, 12, 2, 6, 50)
    assert ab.p == pytest.approx(212 / 16384)
    three = tables[ab.group]
    assert ab.family == 3
    assert ab.p_holm == pytest.approx(holm([p.p for p in three])[three.index(ab)])
    assert ab.diff == pytest.approx((42 - 32) / 50)


def test_report_marks_non_significant_pairs_and_compare_prints_the_table(tmp_path, capsys):
    a, b = outcomes(30, 12, 2, 6)
    near = a[:]
    near[0] = 0  # differs from a on one image only: not significant
    write(tmp_path, [record("a", a), record("b", b), record("near", near)])
    assert main(["report", "--results-dir", str(tmp_path), "--no-plots"]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "## Paired comparisons (exact McNemar, Holm-corrected)" in md
    line = next(x for x in md.splitlines() if x.startswith("| a ") and "near" in x)
    assert "n.s." in line
    line = next(x for x in md.splitlines() if x.startswith("| a ") and "| b " in x)
    assert "n.s." not in line  # p = 0.0129, Holm over 3 pairs: 0.0388 < 0.05
    capsys.readouterr()

    assert main(["report", "--results-dir", str(tmp_path), "--compare", "b,a"]) == 0
    out = capsys.readouterr().out
    assert "mnist · mnist-cnn · gray-box · fgsm eps=0.3" in out
    rows = [x.split() for x in out.splitlines() if x.startswith(("b correct", "b wrong"))]
    assert rows == [["b", "correct", "30", "2"], ["b", "wrong", "12", "6"]]
    assert "p = 0.013" in out and "Holm-adjusted over the 3 pair(s)" in out
    assert "difference -0.2000" in out and "Newcombe" in out
    assert not (tmp_path / "site").exists()  # --compare writes nothing


def test_compare_errors(tmp_path, capsys):
    a, b = outcomes(30, 12, 2, 6)
    write(tmp_path, [record("a", a), record("b", b, params={"steps": 9})])
    assert main(["report", "--results-dir", str(tmp_path), "--compare", "a,zzz"]) == 2
    assert "no stored records for defense 'zzz'" in capsys.readouterr().err
    assert main(["report", "--results-dir", str(tmp_path), "--compare", "a,b"]) == 2
    assert "never evaluated on the same cells" in capsys.readouterr().err
    assert main(["report", "--results-dir", str(tmp_path), "--compare", "a"]) == 2
