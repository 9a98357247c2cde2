"""bench.render.headline: every stored cell of a leaderboard row counts, image by image, on any device.

(The headline's first tests, through the CLI on real runs, are in tests/test_report.py.)
"""

import numpy as np
import pandas as pd

from bench.core import record
from bench.render.headline import device, rows

GPU = {"device_type": "cuda", "device": "NVIDIA H200", "gpu": "NVIDIA H200"}
CPU = {"device_type": "cpu", "device": "cpu (x86_64, 2 threads)"}


def cell(defense, attack, threat, bits, key, on=CPU, data="a", params=None, eps=0.3):
    n = len(bits)
    ident = {
        "kind": "cell",
        "data": {"fingerprint": data},
        "classifier_hash": "c",
        "defense": defense,
        "defense_params": {},
        "attack": attack,
        "attack_params": params or {},
        "threat": threat,
        "n": n,
        "eps": eps,
        "device_type": on["device_type"],
    }
    return {
        "kind": "cell",
        "attack": attack,
        "threat": threat,
        "dataset": "d",
        "classifier": "m",
        "defense": defense,
        "eps": eps,
        "n": n,
        "identity": ident,
        "cell_key": key,
        "norm": "Linf",
        "attack_labels": "true",
        "correct": {"defended_adv": record.encode(bits)},
        "defended_clean_acc": 1.0,
        "defended_adv_acc": sum(bits) / n,
        **on,
    }


def worst(defense, cells, key, data="a"):
    """The driver's worst-over-all row of ``cells`` (one run: one n)."""
    n = cells[0]["n"]
    bits = np.logical_and.reduce([record.decode(c["correct"]["defended_adv"], n) for c in cells])
    ident = {
        "kind": "cell",
        "data": {"fingerprint": data},
        "classifier_hash": "c",
        "defense": defense,
        "defense_params": {},
        "attack": "worst",
        "attack_params": {"cells": [c["cell_key"] for c in cells]},
        "threat": "all",
        "n": n,
        "eps": 0.3,
        "device_type": "cpu",
    }
    return {
        "kind": "worst",
        "attack": "worst",
        "threat": "all",
        "dataset": "d",
        "classifier": "m",
        "defense": defense,
        "eps": 0.3,
        "n": n,
        "identity": ident,
        "cell_key": key,
        "norm": "Linf",
        "attack_labels": "true",
        "correct": {"defended_adv": record.encode(bits)},
        "defended_clean_acc": 1.0,
        "defended_adv_acc": float(bits.mean()),
        **CPU,
    }


def table(recs):
    (t,) = rows(pd.DataFrame(recs)).values()
    return t.set_index("defense")


def test_gpu_cells_count_image_by_image_with_the_cpu_rows_on_the_images_each_scored():
    # CPU: AutoAttack-like grid on 4 images, FGSM/PGD grid on 8; GPU: the same component on 8 images.
    aa4 = cell("x", "aa-apgd-ce", "white", [1, 1, 1, 0], "a4")
    pgd8 = cell("x", "pgd", "white", [1, 1, 1, 1, 1, 1, 0, 1], "p8")
    gpu8 = cell("x", "aa-apgd-ce", "white", [1, 0, 1, 1, 1, 0, 1, 1], "g8", on=GPU)
    t = table([aa4, pgd8, gpu8, worst("x", [aa4], "w4"), worst("x", [pgd8], "w8")])
    row = t.loc["x"]
    # Every attack × threat model ran on 8 images (aa-apgd-ce on the GPU), so the row has 8; the
    # CPU run on 4 still counts on its 4: [1,1,1,0,·,·,·,·] & [1,0,1,1,1,0,1,1] & [1,1,1,1,1,1,0,1].
    assert row["n"] == 8
    assert row["worst case"].startswith("0.500 [")  # 1,0,1,0,1,0,0,1: 4 of 8
    assert row["over"] == "2 attacks × 1 threat model (white-box) on CPU; aa-apgd-ce · white-box on NVIDIA H200"
    assert row["strongest single attack"] == "aa-apgd-ce · white-box on NVIDIA H200 (0.750)"
    assert "on more images" not in row.index or row["on more images"] in ("—", None)


def test_a_partial_suite_on_another_device_names_the_components_it_lacks():
    recs = []
    for defense, comps in (("full", ("aa-apgd-ce", "aa-fab-t")), ("cut", ("aa-apgd-ce",))):
        fgsm = cell(defense, "fgsm", "gray", [1, 1, 1, 1], f"{defense}-f")
        recs += [fgsm, worst(defense, [fgsm], f"{defense}-w")]
        recs += [cell(defense, c, "white", [1, 1, 0, 1], f"{defense}-{c}", on=GPU) for c in comps]
    t = table(recs)
    assert t.loc["cut", "over"].endswith("aa-apgd-ce · white-box on NVIDIA H200, without aa-fab-t")
    assert "without" not in t.loc["full", "over"]
    assert t.loc["full", "over"].endswith("aa-apgd-ce, aa-fab-t · white-box on NVIDIA H200")
    assert t.loc["cut", "worst case"].startswith("0.750 [")
    assert "on more images" not in t.columns  # one n: nothing more to show


def test_only_cells_of_the_same_leaderboard_row_combine_and_cells_alone_make_no_row():
    fgsm = cell("x", "fgsm", "gray", [1, 1, 1, 1], "f")
    other_data = cell("x", "aa-apgd-ce", "white", [0, 0, 0, 0], "g", on=GPU, data="b")
    other_eps = cell("x", "aa-apgd-ce", "white", [0, 0, 0, 0], "e", on=GPU, eps=0.1)
    alone = cell("y", "aa-apgd-ce", "white", [0, 1, 0, 0], "y", on=GPU)
    t = table([fgsm, worst("x", [fgsm], "w"), other_data, other_eps, alone])
    assert list(t.index) == ["x"]
    assert t.loc["x", "worst case"].startswith("1.000 [")
    assert t.loc["x", "over"] == "1 attack × 1 threat model (gray-box)"  # one device: none named


def test_a_budget_sweep_no_worst_row_holds_counts_and_is_named():
    pgd = cell("x", "pgd", "bpda", [1, 1, 1, 1], "p", params={"steps": 40})
    sweep = cell("x", "pgd", "bpda", [1, 1, 0, 1], "s", params={"steps": 200})
    t = table([pgd, sweep, worst("x", [pgd], "w")])
    assert t.loc["x", "worst case"].startswith("0.750 [")
    assert t.loc["x", "over"] == "1 attack × 1 threat model (BPDA), pgd at 2 settings"
    assert t.loc["x", "strongest single attack"] == "pgd · BPDA (0.750)"


def test_a_cell_of_fewer_images_than_the_worst_rows_sets_the_images_all_scored():
    pgd = cell("x", "pgd", "white", [1, 1, 1, 1, 0, 1, 1, 1], "p")
    small = cell("x", "aa-square", "white", [1, 0, 1, 1], "s", on=GPU)
    t = table([pgd, small, worst("x", [pgd], "w")])
    assert t.loc["x", "n"] == 4 and t.loc["x", "worst case"].startswith("0.750 [")
    assert t.loc["x", "on more images"].startswith("0.875 [") and "(n=8, 1 attack" in t.loc["x", "on more images"]


def test_devices_are_named_by_gpu_or_as_cpu():
    assert device(GPU) == "NVIDIA H200"
    assert device(CPU) == "CPU" and device({}) == "CPU"
    assert device({"device_type": "cuda", "device": "NVIDIA A100", "gpu": float("nan")}) == "NVIDIA A100"


def test_the_readme_headline_is_what_todays_code_makes_of_the_committed_records(tmp_path, monkeypatch):
    """README's headline block is generated: rerun the command it names (into a copy) and compare."""
    import re
    import shlex
    from pathlib import Path

    from bench.cli import main

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    block = text.split("<!-- headline:start -->", 1)[1].split("<!-- headline:end -->", 1)[0]
    command = re.search(r"_Generated by `python -m bench (report [^`]*)`", block).group(1)
    args = shlex.split(command)
    copy = tmp_path / "README.md"
    copy.write_text(text)
    args[args.index("--readme") + 1] = str(copy)
    monkeypatch.chdir(root)
    assert main([*args, "--headline-eps", "0.3,fashion-mnist=0.1"]) == 0
    again = copy.read_text().split("<!-- headline:start -->", 1)[1].split("<!-- headline:end -->", 1)[0]
    assert again.replace(str(copy), "README.md") == block
