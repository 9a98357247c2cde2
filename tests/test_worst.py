"""bench.analysis.worst: the one per-sample worst case, and which cells make which worst row.

Unit tests on hand-made records (nothing runs), and one test that the runner's stored worst rows,
the page and the headline give the same number for every leaderboard row of a committed grid.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.analysis.frame import frame
from bench.analysis.worst import cascade_of, row_key, row_records, row_worst, worst_case, worst_fields, worst_groups
from bench.core import record
from bench.core.stats import wilson
from bench.core.threats import over_all
from bench.render import headline, leaderboard
from bench.store.runs import iter_records

ROOT = Path(__file__).resolve().parents[1]


def rec(bits, attack="pgd", threat="white", defense="d", key=None, **extra):
    bits = np.asarray(bits, bool)
    n = len(bits)
    outcomes = {k: bits for k in record.OUTCOMES}
    key = key or f"{defense}-{attack}-{threat}-{n}"
    return record.make(
        "cell",
        outcomes,
        cell_key=key,
        identity={"attack": attack, "threat": threat, "n": n},
        dataset="mnist",
        classifier="c",
        defense=defense,
        attack=attack,
        eps=0.3,
        threat=threat,
        n=n,
        device="cpu",
        time=0.0,
        norm="Linf",
        attack_labels="true",
        **extra,
    )


def test_an_image_is_robust_only_where_every_record_has_it_right():
    a, b = rec([1, 1, 0, 1]), rec([1, 0, 1, 1], attack="fgsm")
    w = worst_case([a, b], outcomes=record.OUTCOMES)
    assert w.per_image and w.n == 4 and w.records == 2
    assert w.outcomes["defended_adv"].tolist() == [True, False, False, True]
    assert (w.acc, w.ci_low, w.ci_high) == (0.5, *wilson(2, 4))


def test_records_of_different_n_meet_on_the_first_images_all_scored():
    small, big = rec([1, 0, 1]), rec([1, 1, 0, 0, 0, 1], attack="fgsm")
    w = worst_case([small, big])
    assert w.n == 3 and w.outcomes["defended_adv"].tolist() == [True, False, False]
    assert worst_case([small, big], n=3).acc == pytest.approx(1 / 3)


def test_without_bitmaps_the_lowest_record_of_that_n_stands_and_says_so():
    legacy = [
        {"n": 4, "defended_adv_acc": 0.5, "defended_adv_acc_ci_low": 0.1, "defended_adv_acc_ci_high": 0.9},
        {"n": 4, "defended_adv_acc": 0.25},
        {"n": 8, "defended_adv_acc": 0.0},
    ]
    w = worst_case(legacy, n=4)
    assert not w.per_image and w.outcomes is None and w.acc == 0.25 and np.isnan(w.ci_low)
    assert worst_case([]) is None


def test_bare_outcomes_combine_as_records_do():
    """bench verify recombines recomputed outcomes ({"n", "correct"}) by the same rule."""
    a, b = rec([1, 1, 0, 1]), rec([0, 1, 1, 1], attack="fgsm")
    bare = worst_case([{"n": 4, "correct": r["correct"]} for r in (a, b)], 4, record.OUTCOMES)
    assert {k: v.tolist() for k, v in bare.outcomes.items()} == {
        k: v.tolist() for k, v in worst_case([a, b], 4, record.OUTCOMES).outcomes.items()
    }


def test_worst_groups_cover_each_threat_and_all_threats():
    cells = [
        rec([1, 1, 0, 1], "fgsm", "gray"),
        rec([1, 0, 1, 1], "pgd", "gray"),
        rec([1, 1, 1, 0], "fgsm", "white"),
        rec([0, 1, 1, 1], "pgd", "white"),
    ]
    groups = {(g.label, g.threat): g for g in worst_groups(cells, "mnist", ["gray", "white"], {}, [])}
    assert set(groups) == {("worst", "gray"), ("worst", "white"), ("worst", "all")}
    everything = groups[("worst", "all")]
    assert len(everything.records) == 4 and over_all(everything.threat)
    assert worst_case(everything.records).acc == 0.0
    fields = worst_fields(everything)
    assert fields["attack"] == "worst" and fields["cell_key"] == everything.key
    assert sorted(fields["attack_params"]["attacks"]) == ["fgsm@gray", "fgsm@white", "pgd@gray", "pgd@white"]
    # the run's own dataset only; a worst row is never an input; one attack per threat makes no per-threat row
    worst_row = record.make(
        "worst",
        {k: np.ones(4, bool) for k in record.OUTCOMES},
        **{
            **{k: cells[0][k] for k in ("dataset", "classifier", "defense", "eps", "threat", "n", "identity")},
            "cell_key": "w",
            "attack": "worst",
            "time": 0.0,
        },
    )
    assert worst_groups([cells[0], cells[2], worst_row], "other", ["gray", "white"], {}, []) == []
    only = {
        (g.label, g.threat) for g in worst_groups([cells[0], cells[2], worst_row], "mnist", ["gray", "white"], {}, [])
    }
    assert only == {("worst", "all")}


def test_a_gradient_free_white_cell_counts_under_bpda_too_and_suites_get_their_row():
    square = rec([1, 0, 1, 1], "aa-square", "white", gradient_free=True)
    bpda = rec([1, 1, 0, 1], "aa-apgd-ce", "bpda")
    groups = {
        (g.label, g.threat): g
        for g in worst_groups(
            [square, bpda], "mnist", ["white", "bpda"], {"aa-individual": ("aa-apgd-ce", "aa-square")}, []
        )
    }
    assert [r["attack"] for r in groups[("worst", "bpda")].records] == ["aa-apgd-ce", "aa-square"]
    assert ("aa-individual", "bpda") in groups and ("aa-individual", "white") not in groups  # APGD-CE missing there


def test_a_cascade_suite_is_made_of_its_stages():
    ce = rec([1, 1, 0, 1], "aa-apgd-ce", "white")
    stage = rec(
        [1, 0, 0, 1], "aa-apgd-t", "white", ran_on=record.encode(np.array([1, 1, 0, 1], bool)), cascade=["aa-apgd-ce"]
    )
    stage = stage.replace(identity={**stage["identity"], "cascade": [{"attack": "aa-apgd-ce"}]})
    assert cascade_of(stage) == ["aa-apgd-ce"] and cascade_of(ce) is None
    groups = {
        (g.label, g.threat): g
        for g in worst_groups([ce, stage], "mnist", ["white"], {"aa": ("aa-apgd-ce", "aa-apgd-t")}, ["aa"])
    }
    assert groups[("aa", "white")].mode == {"mode": "cascade"}
    assert worst_case(groups[("aa", "white")].records).acc == 0.5


def test_driver_page_and_headline_agree_on_every_row_of_a_committed_grid():
    """The committed threat matrix (one run per row): for every defense, the stored worst-over-all
    row the runner wrote, the page's "worst over threat models" and the headline's worst case are
    one number, and each is the per-image worst case of the row's cells recomputed here."""
    folder = ROOT / "results" / "reference" / "threat-matrix"
    recs = list(iter_records(folder))
    df = frame(recs)
    by_key = {r["cell_key"]: r for r in recs}
    stored = [r for r in recs if r.kind == "worst" and over_all(r["threat"]) and r["n"] == 500]
    assert len(stored) >= 5
    page = {(t.title.split(" · ")[1], row.label): row.worst for t in leaderboard.leaderboard(df) for row in t.rows}
    head = {
        (clf, d): v
        for (ds, clf, eps), t in headline.rows(df).items()
        if ds == "mnist"
        for d, v in t.set_index("defense")["worst case"].items()
    }
    alone = 0
    for w in stored:
        parts = [by_key[k] for k in w["identity"]["attack_params"]["cells"]]
        again = worst_case(parts)
        assert again.acc == w["defended_adv_acc"]  # the driver stored what the rule gives
        # The page and the headline combine every stored cell of the row (a budget sweep's too).
        row = [
            r
            for r in recs
            if r.kind == "cell"
            and r["classifier"] == w["classifier"]
            and r["defense"] == w["defense"]
            and r["eps"] == w["eps"]
            and r["dataset"] == w["dataset"]
        ]
        every = worst_case(row)
        alone += {r["cell_key"] for r in row} == {r["cell_key"] for r in parts}
        assert page[(w["classifier"], w["defense"])].acc == pytest.approx(every.acc)
        assert head[(w["classifier"], w["defense"])].startswith(f"{every.acc:.3f} [")
    assert alone >= 3  # rows where all three are one and the same combination


def test_the_page_and_headline_take_their_worst_case_from_analysis():
    """No second implementation: the page and the headline rank by the one function, on the one
    row key."""
    assert leaderboard.row_worst is row_worst and headline.row_worst is row_worst
    assert leaderboard.row_key is row_key and headline.row_key is row_key
    assert isinstance(frame([rec([1, 0])]), pd.DataFrame)


def test_a_rows_worst_case_counts_each_cell_once_and_a_worst_row_only_for_cells_not_there():
    a, b = rec([1, 1, 0, 1, 1, 1], "fgsm", "gray"), rec([1, 0, 1, 1], "pgd", "white")
    sweep = rec([1, 1, 1, 0], "pgd", "white", key="sweep")
    stored = record.make(
        "worst",
        {k: np.array([1, 0, 0, 1], bool) for k in record.OUTCOMES},
        **{
            **{k: b[k] for k in ("dataset", "classifier", "defense", "eps", "n")},
            "threat": "all",
            "identity": {"attack": "worst", "attack_params": {"cells": [a["cell_key"], b["cell_key"]]}},
            "cell_key": "w",
            "attack": "worst",
            "time": 0.0,
        },
    )
    assert row_records([a, b, sweep, stored]) == [a, b, sweep]  # its cells are there: not counted twice
    w = row_worst([a, b, sweep, stored])
    assert w.n == 4 and w.records == 3 and w.outcomes["defended_adv"].tolist() == [True, False, False, False]
    # a worst row whose cells are not among the records stands in for them
    assert row_records([sweep, stored]) == [sweep, stored] and row_worst([sweep, stored]).acc == 0.25
    # one row: the same data, weights and norm; attack labels (the attacker's choice) do not split it
    assert row_key(a) == row_key(a.replace(attack_labels="predicted")) != row_key(a.replace(norm="L2"))


def test_a_rows_n_is_what_every_attack_and_threat_scored_each_cell_counting_where_it_scored():
    """AutoAttack on 8 images and again on 16 beside PGD on 16: the row covers 16 images (every
    attack × threat has a run of 16); the first 8 meet all three cells, the rest the two of 16.
    Without the run of 16, AutoAttack covers 8 only and so does the row."""
    pgd = rec([1] * 14 + [0, 1], "pgd", key="p16")
    aa8 = rec([1, 0, 1, 1, 1, 1, 1, 1], "aa-square", key="a8")
    aa16 = rec([1] * 10 + [0] + [1] * 5, "aa-square", key="a16")
    w = row_worst([pgd, aa8, aa16])
    assert w is not None and w.n == 16 and w.per_image
    want = np.array([1, 0] + [1] * 8 + [0] + [1] * 3 + [0, 1], bool)
    assert w.outcomes is not None and w.outcomes["defended_adv"].tolist() == want.tolist()
    assert w.acc == want.mean()
    alone = row_worst([pgd, aa8])
    assert alone is not None and alone.n == 8 and alone.acc == 7 / 8
    # An explicit n keeps the old rule: every record on its first n.
    assert row_worst([pgd, aa8, aa16], 8).acc == worst_case([pgd, aa8, aa16], 8).acc == 7 / 8
