"""bench.core.labels: one display rule each, shared by tables, plots and the page."""

from __future__ import annotations

import pandas as pd

from bench.core.labels import defense_label, fmt_eps, missing, short
from bench.render.leaderboard import row_variants


def test_short_keeps_different_values_apart():
    a, b = "pretrained-generator-v1-aaaa", "pretrained-generator-v1-bbbb"
    assert short(a) != short(b) and len(short(a)) < len(a)
    assert short("tiny") == "tiny"


def test_eps_and_missing():
    assert fmt_eps(0.3) == "0.3" and fmt_eps(8 / 255) == "0.03137" and fmt_eps(None) == "—"
    assert fmt_eps(float("nan")) == "—" and missing(float("nan")) and not missing(0)


def test_defense_label_cuts_the_variant_only():
    row = {"defense": "countergan", "variant": "lr=0.001, width=64"}
    assert defense_label(row) == "countergan [lr=0.001, width=64]"
    assert defense_label(row, 6) == "countergan [lr=0.…]"
    assert defense_label({"defense": "none", "variant": float("nan")}) == "none"


def test_leaderboard_rows_of_two_long_variants_stay_apart():
    """Regression: the page cut labels to 12 characters, so two variants whose differing value
    shared a long prefix read alike and their cells were merged into one row."""
    g = pd.DataFrame(
        [
            {
                "defense": "d",
                "defense_params": {"pretrained": f"generator-weights-{x}"},
                "threat": "gray",
                "attack": "fgsm",
                "attack_params": {},
                "eps": 0.3,
                "n": 10,
                "run_id": "r",
            }
            for x in ("aaaa", "bbbb")
        ]
    )
    labels = row_variants(g)
    assert labels.nunique() == 2, list(labels)
