import json

import pandas as pd
from conftest import read_records

from bench.analysis.frame import frame
from bench.cli import main


def write_records(results, records):
    run = results / "runs" / "r1"
    run.mkdir(parents=True)
    with open(run / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write('{"torn": ')  # a line a killed run was writing


def rec(defense, adv, t, **extra):
    base = dict(
        dataset="mnist",
        classifier="mnist-cnn",
        defense=defense,
        threat="gray",
        attack="fgsm",
        eps=0.3,
        n=100,
        clean_acc=0.99,
        adv_acc=0.2,
        defended_clean_acc=0.98,
        defended_adv_acc=adv,
        defense_ms_per_sample=0.5,
        attack_ms_per_sample=1.0,
        device="cpu",
        time=t,
    )
    base.update(extra)
    return base


def test_legacy_records_latest_duplicate_wins_and_missing_fields_are_tolerated(tmp_path):
    records = [rec("a", 0.5, 1.0), rec("a", 0.7, 2.0), rec("b", 0.6, 1.5)]
    del records[2]["attack_ms_per_sample"]
    write_records(tmp_path, records)
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 2
    assert df.set_index("defense").loc["a", "defended_adv_acc"] == 0.7
    assert pd.isna(df.set_index("defense").loc["b", "attack_ms_per_sample"])


def test_report_is_byte_for_byte_reproducible(tmp_path):
    write_records(tmp_path, [rec("a", 0.123456789, 1.0), rec("none", 0.2, 2.0, eps=None, attack="cw")])
    main(["report", "--results-dir", str(tmp_path)])
    first = (tmp_path / "results.md").read_bytes()
    (tmp_path / "results.md").unlink()
    main(["report", "--results-dir", str(tmp_path)])
    assert (tmp_path / "results.md").read_bytes() == first
    assert b"0.1235" in first


def test_csv_keeps_unrounded_values(tmp_path):
    write_records(tmp_path, [rec("a", 0.123456789012345, 1.0)])
    main(["report", "--results-dir", str(tmp_path)])
    assert pd.read_csv(tmp_path / "results.csv")["defended_adv_acc"][0] == 0.123456789012345


def test_empty_store():
    assert frame([]).empty


def test_run_then_report_writes_tables_and_every_plot_kind(run_args, capsys):
    assert (
        main(run_args("--defenses", "none,examples.gaussian_blur:GaussianBlur", "--attack", "fgsm", "--eps", "0.1,0.3"))
        == 0
    )
    res = run_args.results
    assert (res / "site" / "index.html").is_file()  # a run writes its page too (issue 29)
    for p in [res / "results.md", res / "results.csv"]:
        p.unlink()
    assert main(["report", "--results-dir", str(res), "--format", "md,csv,latex"]) == 0
    md = (res / "results.md").read_text()
    assert "examples.gaussian_blur:GaussianBlur" in md and "Paper view" in md
    assert (res / "results.tex").read_text().count("\\begin{tabular}") == 1
    plots = res / "plots"
    assert list(plots.glob("acc_vs_eps_*.png")) and list(plots.glob("pareto_*.png"))
    grids = list((plots / "samples").glob("*.png"))
    assert len(grids) == 4  # 2 eps × 2 defenses
    for png in plots.rglob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_filters_and_bad_format(tmp_path, capsys):
    write_records(tmp_path, [rec("a", 0.5, 1.0), rec("b", 0.6, 1.0, attack="pgd")])
    assert main(["report", "--results-dir", str(tmp_path), "--attack", "pgd", "--no-plots"]) == 0
    assert list(pd.read_csv(tmp_path / "results.csv")["defense"]) == ["b"]
    assert main(["report", "--results-dir", str(tmp_path), "--format", "pdf"]) == 2
    assert "unknown report format" in capsys.readouterr().err


def test_pareto_front():
    import numpy as np

    from bench.render.plots import pareto_front

    cost = np.array([1.0, 2.0, 3.0, 0.5, 10.0])
    acc = np.array([0.5, 0.4, 0.9, 0.1, 0.95])
    assert pareto_front(cost, acc).tolist() == [3, 0, 2, 4]


def test_confidence_intervals_are_shown_when_stored(tmp_path):
    write_records(tmp_path, [rec("a", 0.5, 1.0, defended_adv_acc_ci_low=0.4, defended_adv_acc_ci_high=0.6)])
    main(["report", "--results-dir", str(tmp_path), "--no-plots"])
    assert "0.500 [0.400, 0.600]" in (tmp_path / "results.md").read_text()


def test_readme_block_is_generated(tmp_path):
    write_records(tmp_path, [rec("a", 0.5, 1.0), rec("none", 0.2, 2.0)])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\noutro\n")
    assert main(["report", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| none" in text and "pareto_" in text
    readme.write_text("no markers")
    assert main(["report", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 2


def test_weaker_than_fgsm_is_flagged_whatever_order_the_cells_were_stored_in():
    # An executor can deliver PGD before its FGSM twin: the driver's check then saw no FGSM.
    w = {"threat": "white"}
    pgd = rec("a", 0.9, 1.0, attack="pgd", iterative=True, cell_key="p", checks=[], **w)
    fgsm = rec("a", 0.3, 2.0, iterative=False, cell_key="f", checks=[], defended_adv_acc_ci_high=0.35, **w)
    other = rec("b", 0.9, 3.0, attack="pgd", iterative=True, cell_key="q", checks=[], **w)  # no FGSM twin
    legacy = rec("a", 0.95, 4.0, attack="pgd", cell_key="l", **w)  # no `iterative` field: not judged
    df = frame([pgd, fgsm, other, legacy]).set_index("cell_key")
    assert any("weaker than FGSM" in c for c in df.loc["p", "checks"])
    assert df.loc["q", "checks"] == [] and df.loc["f", "checks"] == [] and df.loc["l", "checks"] == []


def test_gray_box_compares_fgsm_and_pgd_on_the_model_they_attacked():
    # Gray-box: the defended figure is a transfer (PGD may do worse there); the bare classifier is not.
    stale = "pgd is weaker than FGSM at the same eps (0.760 > 0.718): a sign of a broken evaluation (masked gradients?)"
    pgd = rec("a", 0.76, 1.0, attack="pgd", iterative=True, cell_key="p", checks=[stale], adv_acc=0.0)
    fgsm = rec("a", 0.718, 2.0, iterative=False, cell_key="f", checks=[], adv_acc=0.1, adv_acc_ci_high=0.12)
    broken = rec("b", 0.5, 1.0, attack="pgd", iterative=True, cell_key="b", checks=[], adv_acc=0.3)
    fgsm_b = rec("b", 0.5, 2.0, iterative=False, cell_key="g", checks=[], adv_acc=0.1, adv_acc_ci_high=0.12)
    df = frame([pgd, fgsm, broken, fgsm_b]).set_index("cell_key")
    assert df.loc["p", "checks"] == []  # the stored verdict of the old rule is not shown
    assert any("weaker than FGSM" in c and "bare classifier" in c for c in df.loc["b", "checks"])


def test_worst_case_columns_are_not_split_by_their_cells():
    rows = [
        rec(
            d,
            0.1,
            1.0,
            attack="worst",
            threat="white",
            cell_key=f"w{d}",
            identity={"defense": d, "attack": "worst", "attack_params": {"cells": [f"{d}1", f"{d}2"]}},
        )
        for d in ("a", "b")
    ]
    df = frame(rows)
    assert list(df["attack_variant"]) == ["", ""]


def test_fgsm_check_survives_filters_and_never_pairs_other_classifiers():
    w = {"threat": "white", "checks": []}
    pgd = rec("a", 0.9, 1.0, attack="pgd", iterative=True, cell_key="p", classifier_hash="h1", **w)
    fgsm = rec("a", 0.3, 2.0, iterative=False, cell_key="f", classifier_hash="h1", **w)
    pgd2 = rec("a", 0.9, 1.0, attack="pgd", iterative=True, cell_key="p2", classifier_hash="h2", **w)
    df = frame([pgd, fgsm, pgd2], filters={"attack": ["pgd"]}).set_index("cell_key")
    assert any("weaker than FGSM" in c for c in df.loc["p", "checks"])  # its FGSM twin is filtered out
    assert df.loc["p2", "checks"] == []  # the FGSM cell was computed with another classifier


def test_headline_names_each_defenses_worst_case_and_the_attack_that_set_it(run_args, tmp_path):
    from bench.cli import main

    assert (
        main(run_args("--defenses", "none,bitdepth", "--attack", "fgsm,pgd", "--eps", "0.3", "--threat", "gray,white"))
        == 0
    )
    readme = tmp_path / "R.md"
    readme.write_text("intro\n<!-- headline:start -->\nold\n<!-- headline:end -->\nrest\n")
    assert main(["report", "--readme", str(readme), "--headline", str(run_args.results), "--headline-eps", "0.3"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    recs = [r for r in read_records(run_args.results) if r["threat"] == "all"]
    for r in recs:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {r['defense']} "))
        assert f"{r['defended_adv_acc']:.3f} [" in line and "2 attacks × 2 threat models" in line
    assert main(["report", "--headline", str(run_args.results)]) == 2  # needs --readme


def test_headline_combines_runs_of_different_n_image_by_image(run_args, tmp_path):
    """AutoAttack on fewer images than PGD: the headline's worst case is per image over both runs'
    worst rows on the images both scored, with the bigger run's own value beside it."""
    import numpy as np

    from bench.cli import main
    from bench.core import record

    base = ("--defenses", "bitdepth", "--eps", "0.3", "--threat", "gray,white")
    assert main(run_args(*base, "--attack", "fgsm,pgd", "--limit", "16")) == 0
    assert main(run_args(*base, "--attack", "fgsm,bim", "--limit", "8", "--defenses", "bitdepth")) == 0
    readme = tmp_path / "R.md"
    readme.write_text("<!-- headline:start -->\n<!-- headline:end -->\n")
    assert main(["report", "--readme", str(readme), "--headline", str(run_args.results)]) == 0
    rows = {r["n"]: r for r in read_records(run_args.results) if r["threat"] == "all"}
    both = np.logical_and(
        record.decode(rows[16]["correct"]["defended_adv"], 16)[:8], record.decode(rows[8]["correct"]["defended_adv"], 8)
    )
    (line,) = [ln for ln in readme.read_text().splitlines() if ln.startswith("| bitdepth ")]
    assert "| 8   | " in line and f"{both.mean():.3f} [" in line and "3 attacks × 2 threat models" in line
    assert f"{rows[16]['defended_adv_acc']:.3f} [" in line and "(n=16, 2 attacks" in line


# --- moved from the former tests/test_trust.py ---------------------------------------


def test_report_never_replaces_a_row_with_another_cell(run_args):
    args = run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")
    assert main(args) == 0
    small = list(args)
    small[small.index("--limit") + 1] = "24"
    assert main(small) == 0
    from bench.analysis.frame import frame
    from bench.store.runs import iter_records

    df = frame(iter_records(run_args.results))
    assert sorted(df["n"]) == [24, 48]
    assert set(df["variant"]) == {"n=24", "n=48"}
    text = (run_args.results / "results.md").read_text()
    assert "none [n=24]" in text and "none [n=48]" in text
    runs = sorted(p.name for p in (run_args.results / "runs").iterdir())
    assert main(["report", "--results-dir", str(run_args.results), "--latest", "--no-plots"]) == 0
    assert "none [n=24]" not in (run_args.results / "results.md").read_text()  # one run: no variant
    first_n = json.loads((run_args.results / "runs" / runs[0] / "records.jsonl").read_text().splitlines()[0])["n"]
    assert main(["report", "--results-dir", str(run_args.results), "--run", runs[0], "--no-plots"]) == 0
    import pandas as pd

    assert list(pd.read_csv(run_args.results / "results.csv")["n"]) == [first_n]
    assert main(["report", "--results-dir", str(run_args.results), "--run", "nope"]) == 2


def test_report_says_when_rows_come_from_several_code_states(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    assert main(run_args("--defenses", "none", "--attack", "pgd", "--eps", "0.3")) == 0
    for i, env in enumerate(sorted(run_args.results.glob("runs/*/env.json"))):
        data = json.loads(env.read_text())
        data["git_commit"] = f"{i}" * 40 + ("-dirty" if i else "")
        env.write_text(json.dumps(data))
    assert main(["report", "--results-dir", str(run_args.results), "--no-plots"]) == 0
    assert "2 code state(s)" in (run_args.results / "results.md").read_text()


def test_one_table_column_never_mixes_settings_across_defenses():
    """Two defenses whose pgd cells differ in steps and labels get labelled columns/rows."""
    from bench.analysis.frame import frame
    from bench.render.report import paper_view

    def rec(defense, steps, labels, key, t):
        ident = {
            "kind": "cell",
            "data": {"dataset": "mnist"},
            "n": 10,
            "classifier": "c",
            "defense": defense,
            "defense_params": {},
            "attack": "pgd",
            "attack_params": {"steps": steps},
            "eps": 0.3,
            "attack_labels": labels,
            "threat": "gray",
        }
        return {
            "dataset": "mnist",
            "classifier": "c",
            "defense": defense,
            "threat": "gray",
            "attack": "pgd",
            "eps": 0.3,
            "n": 10,
            "clean_acc": 1.0,
            "adv_acc": 0.0,
            "defended_clean_acc": 1.0,
            "defended_adv_acc": t / 10,
            "cell_key": key,
            "identity": ident,
            "time": t,
            "device": "cpu",
        }

    df = frame([rec("none", 10, "predicted", "k1", 1), rec("jpeg", 40, "true", "k2", 2)])
    assert set(df["attack_variant"]) == {"attack_params.steps=10", "attack_params.steps=40"}
    assert set(df["variant"]) == {'attack_labels="predicted"', 'attack_labels="true"'} or all(
        "attack_labels=" in v for v in df["variant"]
    )
    ((_, table),) = paper_view(df)
    assert table.shape[0] == 2 and sum(c.startswith("pgd 0.3") for c in table.columns) == 2


def test_plots_draw_no_one_point_curves_and_keep_one_colour_per_defense(tmp_path):
    import pandas as pd

    from bench.render import plots

    rows = [
        dict(
            dataset="mnist",
            classifier="c",
            threat="gray",
            attack="fgsm",
            eps=e,
            defense=d,
            variant="",
            defended_adv_acc=0.5,
            defense_ms_per_sample=1.0,
            device="cpu",
        )
        for d in ("a", "b")
        for e in (0.3,)
    ]
    assert plots.accuracy_vs_eps(pd.DataFrame(rows), tmp_path) == []  # one eps: no curve to draw
    rows += [{**r, "eps": 0.1} for r in rows]
    assert len(plots.accuracy_vs_eps(pd.DataFrame(rows), tmp_path)) == 1
    assert plots.colours(["b", "a"]) == plots.colours(["a", "b", "a"])  # by name, not by order met
    assert len(set(plots.colours(["a", "b", "c"]).values())) == 3


def test_lead_figures_and_training_curves_draw_no_one_point_plot(tmp_path):
    """The page's lead figure (worst case against ms/sample) needs two points; a training curve two
    training lengths on one line (issue 37: an "accuracy vs training" plot with a single point)."""
    import pandas as pd

    from bench.render import plots

    cpu = dict(title="t", stem="lead_t", label="a", defense="a", acc=0.5, lo=0.4, hi=0.6, n=10, ms=1.0)
    one = pd.DataFrame([{**cpu, "device": "cpu (x86_64, 2 threads)"}])
    assert plots.worst_vs_latency(one, tmp_path) == []
    two = pd.concat([one, one.assign(device="NVIDIA H200", ms=0.01), one.assign(label="b", defense="b", ms=0.0)])
    (png,) = plots.worst_vs_latency(two, tmp_path)  # CPU and GPU panels; a 0 ms defense at the left edge
    assert png.name == "lead_t.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.worst_vs_latency(two, tmp_path / "again")[0].read_bytes() == png.read_bytes()  # byte for byte
    assert plots._markers(["cpu (x86_64, 2 threads)", "NVIDIA H200"]) == {
        "cpu (x86_64, 2 threads)": "o",
        "NVIDIA H200": "^",
    }
    base = dict(
        dataset="mnist",
        classifier="c",
        threat="gray",
        attack="fgsm",
        eps=0.3,
        defense="d",
        variant="",
        generator_iterations=1000,
        defended_adv_acc=0.5,
        defended_clean_acc=0.9,
        time=1.0,
        defense_params={},
    )
    assert plots.accuracy_vs_iterations(pd.DataFrame([base]), tmp_path) == []
    curve = [base, {**base, "generator_iterations": 2000, "time": 2.0}]
    assert len(plots.accuracy_vs_iterations(pd.DataFrame(curve), tmp_path)) == 1


def test_a_report_removes_the_plots_it_no_longer_draws(run_args):
    """Regression: regenerating a report kept figures an older rule had drawn (one-point curves),
    so a stale plot sat beside the current ones and on the page."""
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    plots = run_args.results / "plots"
    stale = plots / "acc_vs_eps_mnist_mnist-cnn_gray.png"  # one eps: today's rule draws no curve
    stale.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n")
    (plots / "samples").mkdir(exist_ok=True)
    (plots / "samples" / "gone.png").write_bytes(b"\\x89PNG\\r\\n\\x1a\\n")
    assert main(["report", "--results-dir", str(run_args.results)]) == 0
    assert not stale.exists() and not (plots / "samples" / "gone.png").exists()
    assert list(plots.glob("pareto_*.png"))  # what it draws is still there


def test_headline_eps_may_name_a_dataset():
    from bench.cli.report import _eps_kept, headline_eps

    eps = headline_eps(["0.3", "fashion-mnist=0.1", "cifar10=8/255"])
    assert eps == {None: [0.3], "fashion-mnist": [0.1], "cifar10": [8 / 255]}
    assert _eps_kept(eps, "mnist", 0.3) and not _eps_kept(eps, "mnist", 0.1)
    assert _eps_kept(eps, "fashion-mnist", 0.1) and not _eps_kept(eps, "fashion-mnist", 0.3)


def test_headline_never_combines_rows_of_different_data():
    import pandas as pd

    from bench.core import record
    from bench.render.headline import rows

    def worst(fp, n, bits):
        ident = {"data": {"fingerprint": fp}, "classifier_hash": "c", "defense": "x", "attack_params": {"cells": []}}
        return {
            "kind": "worst",
            "attack": "worst",
            "threat": "all",
            "dataset": "d",
            "classifier": "m",
            "defense": "x",
            "eps": 0.3,
            "n": n,
            "identity": ident,
            "cell_key": fp + str(n),
            "norm": "Linf",
            "attack_labels": "true",
            "correct": {"defended_adv": record.encode(bits)},
            "defended_clean_acc": 1.0,
            "defended_adv_acc": sum(bits) / n,
        }

    df = pd.DataFrame([worst("a", 4, [1, 1, 0, 0]), worst("b", 2, [0, 1]), worst("a", 2, [1, 0])])
    (t,) = rows(df).values()
    assert sorted(t["n"]) == [2, 2]  # data a: 4 and 2 images combined on 2; data b alone
    assert sorted(t["worst case"].str[:5]) == ["0.500", "0.500"]


def test_report_page_headline_and_comparison_are_the_same_whatever_pandas_strings(string_mode, tmp_path, capsys):
    """Issue 29: under pandas 3 with pyarrow, strings are pyarrow-backed ``str`` and a vectorised
    str + number (or + an empty float selection) raises, so the adaptive grid's report crashed.
    Every renderer formats values itself: the same bytes as the committed report in every mode."""
    import shutil
    from pathlib import Path

    ref = Path(__file__).resolve().parent.parent / "results" / "reference"
    grid = tmp_path / "adaptive"
    shutil.copytree(ref / "adaptive" / "runs", grid / "runs")
    assert main(["report", "--results-dir", str(grid), "--no-plots", "--html"]) == 0
    assert (grid / "results.md").read_text() == (ref / "adaptive" / "results.md").read_text()
    assert (grid / "results.csv").read_text() == (ref / "adaptive" / "results.csv").read_text()
    assert (grid / "site" / "index.html").is_file()
    readme = tmp_path / "README.md"
    readme.write_text("<!-- headline:start -->\n<!-- headline:end -->\n")
    assert main(["report", "--readme", str(readme), "--headline", f"{grid},{ref / 'threat-matrix'}"]) == 0
    assert "| countergan-adaptive-long " in readme.read_text()
    capsys.readouterr()
    assert main(["report", "--results-dir", str(ref / "threat-matrix"), "--compare", "bitdepth,median"]) == 0
    assert "bitdepth correct" in capsys.readouterr().out


def test_report_says_when_rows_come_from_several_package_versions(tmp_path):
    """Issue 29: torch is a range now; a table mixing runs of two torch versions says so."""
    for run, torch_version, defense in (("r1", "2.14.1", "a"), ("r2", "2.11.0", "b")):
        folder = tmp_path / "runs" / run
        folder.mkdir(parents=True)
        (folder / "records.jsonl").write_text(json.dumps(rec(defense, 0.5, 1.0, run_id=run)) + "\n")
        (folder / "env.json").write_text(
            json.dumps(
                {
                    "git_commit": "a" * 40,
                    "versions": {"python": "3.11.7", "torch": torch_version, "torchvision": "0.29.1", "pandas": run},
                }
            )
        )
    assert main(["report", "--results-dir", str(tmp_path), "--no-plots"]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "2 package version sets" in text and "torch 2.11.0" in text and "torch 2.14.1" in text
    assert "code state" not in text  # one commit
    (tmp_path / "runs" / "r2" / "env.json").write_text((tmp_path / "runs" / "r1" / "env.json").read_text())
    assert main(["report", "--results-dir", str(tmp_path), "--no-plots"]) == 0
    assert "package version" not in (tmp_path / "results.md").read_text()  # pandas alone sets no number


def test_pass_and_cascade_columns_appear_only_where_records_have_them(tmp_path):
    from bench.core import record

    old = tmp_path / "old"
    write_records(old, [rec("a", 0.5, 1.0)])
    assert main(["report", "--results-dir", str(old), "--no-plots"]) == 0
    md = (old / "results.md").read_text()
    assert "attack fwd/img" not in md and "cascade" not in md
    new = tmp_path / "new"
    ran = record.encode([True, False, True, True])
    write_records(
        new,
        [
            rec("a", 0.5, 1.0, attack_forward_per_sample=6.625, attack_backward_per_sample=5.625),
            rec(
                "a",
                0.25,
                1.0,
                attack="aa-apgd-t",
                n=4,
                cascade=["aa-apgd-ce"],
                ran_on=ran,
                attack_forward_per_sample=30.0,
                attack_backward_per_sample=20.0,
            ),
        ],
    )
    assert main(["report", "--results-dir", str(new), "--no-plots"]) == 0
    md = (new / "results.md").read_text()
    assert "attack fwd/img" in md and "attack bwd/img" in md
    assert "6.625" in md and "5.625" in md and "after aa-apgd-ce; ran on 3/4" in md
    assert "aa-apgd-t 0.3 (cascade)" in md


# --- the ranking at the top of every report: the headline's and the page's one number ---------


def test_the_reports_ranking_is_row_worst_as_the_headline_and_page_show_it_on_committed_records():
    """Issue 37 (item 4): built from the same committed records (the threat-matrix reference
    grid), each ranking row is ``row_worst`` over that leaderboard row's records, and the same
    accuracy, interval and n as README's headline and the leaderboard page show for the rows they
    share; best first; and it leads the committed results.md."""
    from pathlib import Path

    from bench.analysis.frame import run_commits, run_versions
    from bench.analysis.worst import row_key, row_records, row_worst
    from bench.core.labels import fmt_eps
    from bench.render import headline, leaderboard
    from bench.render.report import ranking
    from bench.store.runs import iter_records

    grid = Path(__file__).resolve().parents[1] / "results" / "reference" / "threat-matrix"
    df = frame(iter_records(grid), None, run_commits(grid), run_versions(grid))
    ranked = ranking(df)
    shown = {(title, r["defense"]): r for title, t in ranked for _, r in t.iterrows()}
    assert len(shown) == 14  # 13 defenses on mnist-cnn, the adversarially trained classifier alone
    for title, t in ranked:
        accs = [float(v.split()[0]) for v in t["worst case [95% CI]"]]
        assert accs == sorted(accs, reverse=True), title  # best first

    # The one function, on the records of each row (row_key), directly.
    for (ds, clf, defense, eps, _), g in df.groupby(
        ["dataset", "classifier", "defense", "eps", df.apply(row_key, axis=1)], sort=True
    ):
        recs = [r for _, r in g.iterrows()]
        w = row_worst(recs)
        r = shown[(f"{ds} · {clf} · L∞ ε = {fmt_eps(eps)}", defense)]
        assert r["worst case [95% CI]"] == f"{w.acc:.3f} [{w.ci_low:.3f}, {w.ci_high:.3f}]"
        assert (r["n"], r["cells"]) == (w.n, len(row_records(recs)))
        assert w.per_image and r["cells"] >= 8  # 2 attacks × 4 threat models, a budget sweep's more

    # README's headline, from the same records: every one of its rows, the same number.
    compared = 0
    for (ds, clf, eps), t in headline.rows(df).items():
        for _, h in t.iterrows():
            r = shown[(f"{ds} · {clf} · L∞ ε = {fmt_eps(eps)}", h["defense"])]
            assert (r["worst case [95% CI]"], r["n"]) == (h["worst case"], int(h["n"])), h["defense"]
            compared += 1
    assert compared == len(shown)

    # The leaderboard page, from the same records: every row, the same number, the same order.
    for table in leaderboard.leaderboard(df):
        (t,) = [t for title, t in ranked if title == table.title]
        assert list(t["defense"]) == [row.label for row in table.rows]
        for row in table.rows:
            r = shown[(table.title, row.label)]
            assert r["worst case [95% CI]"] == f"{row.worst.acc:.3f} [{row.worst.lo:.3f}, {row.worst.hi:.3f}]"
            assert r["n"] == row.worst.n

    # The committed report leads with it, after its header.
    text = (grid / "results.md").read_text()
    assert text.index("## Ranking: worst case over every attack and threat model") < text.index("## Paper view")
    first = ranked[0][1].iloc[0]
    assert f"| {first['defense']}" in text.split("## Paper view")[0]


def test_the_ranking_keeps_rows_apart_and_says_when_no_per_image_outcomes_are_stored(tmp_path):
    """Records without bitmaps (older runs): the lowest cell, said so; an unbounded attack gets its
    own table; a report with records always has the section, at the top."""
    write_records(
        tmp_path,
        [
            rec("a", 0.5, 1.0, defended_adv_acc_ci_low=0.4, defended_adv_acc_ci_high=0.6),
            rec("a", 0.25, 2.0, attack="pgd"),
            rec("b", 0.75, 1.5, threat="white"),
            rec("none", 0.2, 2.0, eps=None, attack="cw"),
        ],
    )
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    top = text.split("## Paper view")[0]
    assert top.index("## Ranking") > top.index("Generated by")
    assert "### mnist · mnist-cnn · L∞ ε = 0.3" in top and "### mnist · mnist-cnn · unbounded attacks" in top
    assert top.index("unbounded attacks") < top.index("ε = 0.3")  # tables in budget order, as on the page
    table = top.split("### mnist · mnist-cnn · L∞ ε = 0.3")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "defense" not in line]
    assert rows[0].split("|")[1].strip() == "b" and rows[1].split("|")[1].strip() == "a"  # best first
    assert "0.250 (lowest cell: no per-image outcomes)" in rows[1] and rows[1].rstrip("| ").endswith("2")
