"""tools.gpu (issue 11): the GPU script's dry run on CPU, as CI runs it, and its pieces."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tools import gpu

ROOT = Path(__file__).resolve().parent.parent


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "tools.gpu", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_dry_run_runs_every_step_and_packs_the_results(tmp_path):
    """`make gpu DRY_RUN=1`: every step on CPU with tiny sizes, each prints its table, one tar comes back."""
    out = tmp_path / "out"
    res = _script("--dry-run", "--work", str(tmp_path / "work"), "--out", str(out))
    log = res.stdout
    assert res.returncode == 0, log[-4000:] + res.stderr[-2000:]
    for key in gpu.STEP_ORDER:
        assert f"=== step {key}: {gpu.TITLES[key]}" in log
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["dry_run"] and set(steps) == set(gpu.STEP_ORDER)
    assert list(steps) == list(gpu.STEP_ORDER) and gpu.STEP_ORDER[:2] == ("1", "aa")  # aa first after 1
    for key in ("1", "aa", "2", "3", "4", "5"):
        assert steps[key]["status"] == "ok", (key, steps[key])
    if importlib_available("tools.defensegan_curve"):
        assert steps["1b"]["status"] == "ok", steps["1b"]
        assert any(name.endswith(".pt") for name in steps["1b"]["kept_in_out"])
    else:
        assert "skipped" in steps["1b"]["status"]
    # the tables
    assert "| defense " in log and "| countergan " in log and "| defensegan-fast " in log  # step 2
    assert steps["3"]["ratio"] > 0 and "[step 3] DefenseGAN" in log  # step 3
    rows = {
        r["variant"]: r
        for r in map(json.loads, (tmp_path / "work" / "step4-reconstruction.jsonl").read_text().splitlines())
    }
    for variant in ("eager", "eager-func", "floor"):  # step 4
        assert rows[variant]["status"] == "ok" and rows[variant]["ms_per_sample"] > 0
    assert rows["eager-func"]["max_abs_diff"] < 1e-4  # the rewritten descent is the defense's
    assert rows["graphs"]["status"] == "skipped" and "CUDA" in rows["graphs"]["note"]
    assert rows["compile"]["status"] in ("ok", "skipped"), rows["compile"]
    assert "| width | variant " in log
    assert {c.split("/")[1] for c in steps["5"]["cells"]} == {"gray", "bpda", "bpda-eot"}  # step 5
    # step aa: every planned unit ran, and every planned (classifier, defense, threat) has its four
    # AutoAttack components' cells (Square's under BPDA / BPDA+EOT is its white-box one) at the dry n
    aa = steps["aa"]
    planned = ["/".join(p) for p in gpu.aa_pairs(gpu.plan_aa())]
    assert aa["planned"] == planned and aa["covered"] == planned and aa["n"] == 8
    assert aa["units_done"] == aa["units"] == len(gpu.plan_aa())
    assert all(r["status"] == "ok" for r in aa["run_units"]), aa["run_units"]
    for pair in planned:
        assert set(aa["cells"][pair]) == set(gpu.AA_COMPONENTS), pair
    for clf, d in gpu.AA_HEADLINE:  # a worst-over-all row over the threat models it completed (≥ 2)
        w = aa["worst"][f"{clf}/{d}"]
        assert w["threats"] == ["white"] if clf == "mnist-cnn-pgdat" else w["worst_over_threats"] is not None, (clf, d)
    assert aa["seeded_runs"] == []  # earlier leases' cells are on 500 images
    assert "[step aa] AutoAttack on 8 images" in log and "| mnist-cnn-pgdat | none " in log
    # what comes back: ≤ 8 files of ≤ 16 MiB, the records and the report in one tar
    files = [p for p in out.iterdir() if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= gpu.MAX_FILE for p in files)
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu-results/gpu.log" in names and "gpu-results/summary.json" in names
    assert "gpu-results/results/results.md" in names
    assert any(n.startswith("gpu-results/results/runs/") and n.endswith("records.jsonl") for n in names)
    assert "gpu-results/configs/stepaa-job.json" in names and "gpu-results/stepaa-units.jsonl" in names
    assert not any("/cache/" in n or n.endswith(".pt") for n in names)
    assert "=== summary" in log and "DefenseGAN (L = 5, R = 2)" in log


def importlib_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_spent_budget_skips_every_step_with_a_message(tmp_path):
    res = _script(
        "--dry-run", "--budget", "0", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), timeout=120
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stdout.count("skipped: the budget is gone") == len(gpu.STEP_ORDER)
    steps = json.loads((tmp_path / "o" / "summary.json").read_text())["steps"]
    assert all(s["status"] == "skipped (budget)" for s in steps.values())
    assert (tmp_path / "o" / "gpu-results.tar.gz").is_file()


def test_unknown_step_is_refused(tmp_path):
    res = _script(
        "--dry-run", "--steps", "1,9", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), timeout=120
    )
    assert res.returncode == 2 and "unknown step(s) 9" in res.stdout


def _wheel(folder: Path, name: str, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (what `pip download` brings for torchattacks and mlxtend)."""
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
            for p, d in files.items()
        )
        + f"{name}-{version}.dist-info/RECORD,,\n"
    )
    path = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return path


def test_carried_wheels_install_offline_into_a_target_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    wheel = _wheel(tmp_path / "wheels", "gpu_fake_pkg")
    _wheel(tmp_path / "wheels", "other_pkg")
    files = gpu.install_wheels(["gpu_fake_pkg"], tmp_path / "wheels", tmp_path / "site")
    assert files == [str(wheel)]
    assert (tmp_path / "site" / "gpu_fake_pkg" / "__init__.py").is_file()
    assert not (tmp_path / "site" / "other_pkg").exists()
    assert str(tmp_path / "site") in sys.path
    with pytest.raises(RuntimeError, match="no wheel for mlxtend.*make gpu-wheels"):
        gpu.install_wheels(["mlxtend"], tmp_path / "wheels", tmp_path / "site")


def test_step_configs_are_bench_toml_plus_overrides():
    base = tomllib.loads((ROOT / "bench.toml").read_text())
    doc = {
        **base,
        "defenses": {**base.get("defenses", {}), "defensegan": {"L": 200, "R": 10}},
        "attacks": {"pgd": {"steps": 40}, "torchattacks:MIFGSM": {"decay": 1.0}},
    }
    assert tomllib.loads(gpu.dump_toml(doc)) == doc


def test_records_are_picked_per_cell_latest_first(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    rows = [
        {"defense": "a", "attack": "fgsm", "threat": "gray", "eps": 0.3, "limit": 8, "time": 1, "defended_adv_acc": 1},
        {"defense": "a", "attack": "fgsm", "threat": "gray", "eps": 0.3, "limit": 8, "time": 2, "defended_adv_acc": 2},
        {"defense": "a", "attack": "fgsm", "threat": "gray", "eps": 0.3, "limit": 16, "time": 3, "defended_adv_acc": 3},
        {"defense": "b", "attack": "pgd", "threat": "bpda", "eps": 0.3, "limit": 8, "time": 1, "defended_adv_acc": 4},
    ]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn": ')
    got = gpu.pick(tmp_path, ["a", "b"], ["fgsm"], 0.3, ["gray"], 8)
    assert [r["defended_adv_acc"] for r in got] == [2]


# ---- step aa: AutoAttack on the headline's MNIST defenses (issue 29) ----------------------------------
def test_aa_plan_orders_by_what_is_informative_and_shares_computations():
    units = gpu.plan_aa()
    rows = [(u["group"], u["tier"], u["classifier"], tuple(u["defenses"]), tuple(u["threats"])) for u in units]
    assert [u["id"] for u in units] == list(range(1, len(units) + 1))
    cnn = "mnist-cnn"
    open_white = [
        ("open", "white", "mnist-cnn-pgdat", ("none",), ("white",)),  # gray-box etc. are the same
        ("open", "white", cnn, ("bitdepth",), ("white", "bpda", "bpda-eot")),  # no gradients, deterministic
        ("open", "white", cnn, ("countergan-adaptive-long",), ("white",)),
        ("open", "white", cnn, ("countergan-adaptive",), ("white",)),
        ("open", "white", cnn, ("defensegan-L10-R1",), ("white",)),
    ]
    open_rest = [
        ("open", "bpda", cnn, ("countergan-adaptive-long",), ("bpda", "bpda-eot")),  # deterministic
        ("open", "bpda", cnn, ("countergan-adaptive",), ("bpda", "bpda-eot")),
        ("open", "bpda", cnn, ("defensegan-L10-R1",), ("bpda",)),  # randomised
        ("open", "bpda-eot", cnn, ("defensegan-L10-R1",), ("bpda-eot",)),
        (
            "open",
            "gray",
            cnn,
            ("bitdepth", "countergan-adaptive-long", "countergan-adaptive", "defensegan-L10-R1"),
            ("gray",),
        ),
    ]
    assert rows[:10] == open_white + open_rest
    rest = rows[10:]
    assert {g for g, *_ in rest} == {"rest"}
    assert [t for _, t, *_ in rest] == sorted((t for _, t, *_ in rest), key=gpu.AA_TIERS.index)  # tiers in order
    white = [d for _, t, _, (d,), _ in (r for r in rest if r[1] == "white")]
    # highest headline worst case first (ties: the 500-image FGSM/PGD figure), the 0.000 ones last
    assert white == [
        "countergan-conv-mse",
        "countergan-conv-bce",
        "countergan-linear-bce",
        "countergan-linear-mse",
        "countergan-linear-wgangp",
        "gaussian",
        "median",
        "jpeg",
        "none",
        "countergan",
    ]
    by = {(t, ds): th for _, t, _, ds, th in rest}
    assert by[("white", ("jpeg",))] == ("white", "bpda", "bpda-eot") and ("bpda", ("jpeg",)) not in by
    assert by[("white", ("none",))] == ("white",) and ("bpda", ("none",)) not in by  # scored in the gray unit
    assert by[("bpda", ("gaussian",))] == ("bpda",) and by[("bpda-eot", ("gaussian",))] == ("bpda-eot",)
    assert by[("bpda", ("median",))] == ("bpda", "bpda-eot")
    gray = [ds for _, t, _, ds, _ in rest if t == "gray"]
    assert len(gray) == 1 and set(gray[0]) == {
        d for c, d in gpu.AA_HEADLINE if c == cnn and gpu.AA_HEADLINE[(c, d)][0] < gpu.AA_OPEN
    }
    # no pair twice, and every threat model of every headline row is either stored or the same computation
    pairs = gpu.aa_pairs(units)
    assert len(pairs) == sum(len(u["defenses"]) * len(u["threats"]) for u in units)
    for clf, d in gpu.AA_HEADLINE:
        got = {t for c, e, t in pairs if (c, e) == (clf, d)}
        want = {"white"} if clf == "mnist-cnn-pgdat" else {"white", "gray"} if d == "none" else set(gpu.AA_TIERS)
        assert got == want, (clf, d, got)


def test_aa_plan_follows_the_threshold_and_the_kinds_it_is_given():
    head = {
        ("c", "a"): (0.9, 0.9),
        ("c", "b"): (0.01, 0.2),
        ("c", "i"): (0.0, 0.0),
        ("k", "r"): (0.5, 0.4),
        ("k", "j"): (0.95, 0.9),
    }
    kinds = {"i": ("identity",), "j": ("identity",), "r": ("randomized", "no-gradient")}
    rows = [
        (u["tier"], u["classifier"], tuple(u["defenses"]), tuple(u["threats"]))
        for u in gpu.plan_aa(head, kinds, open_at=0.3)
    ]
    assert rows == [
        ("white", "k", ("j",), ("white",)),
        ("white", "c", ("a",), ("white",)),
        ("white", "k", ("r",), ("white", "bpda")),
        ("bpda", "c", ("a",), ("bpda", "bpda-eot")),
        ("bpda-eot", "k", ("r",), ("bpda-eot",)),
        ("gray", "k", ("j", "r"), ("gray",)),
        ("gray", "c", ("a",), ("gray",)),
        ("white", "c", ("b",), ("white",)),
        ("white", "c", ("i",), ("white",)),
        ("bpda", "c", ("b",), ("bpda", "bpda-eot")),
        ("gray", "c", ("b", "i"), ("gray",)),
    ]
    alone = gpu.plan_aa({("k", "j"): (0.9, 0.9)}, kinds)  # an identity defense alone: white-box is all of it
    assert [(u["tier"], u["threats"]) for u in alone] == [("white", ["white"])]


def test_aa_plan_covers_the_headline_grids_with_their_settings():
    """The planned defenses are the AutoAttack grids' (threat-matrix-aa, the adaptive grid's
    countergan-adaptive-long) and the PGD-trained classifier's `none`; the kinds are the plugins'
    flags; the components are the `aa` suite's."""
    import attacks.aa_component  # noqa: F401  (registers the suite)
    from bench.core.registry import ATTACKS
    from bench.run.plan import make_defense

    grid = tomllib.loads(gpu.AA_GRID.read_text())
    assert grid["run"]["eps"] == [gpu.AA_EPS] and set(grid["run"]["threat"]) == set(gpu.AA_TIERS)
    adaptive = tomllib.loads((ROOT / "results/reference/adaptive/grid.toml").read_text())
    aa_adaptive = {
        d
        for step in adaptive["grid"]["steps"]
        if {"aa", "aa-individual"} & set(",".join(step).split(","))
        for d in step[step.index("--defenses") + 1].split(",")
    }
    assert set(gpu.AA_HEADLINE) == (
        {("mnist-cnn", d) for d in grid["run"]["defenses"]}
        | {("mnist-cnn", d) for d in aa_adaptive}
        | {("mnist-cnn-pgdat", "none")}
    )
    assert ATTACKS.suites["aa"][0] == gpu.AA_COMPONENTS
    base = tomllib.loads((ROOT / "bench.toml").read_text())
    tables = {**base.get("defenses", {}), **grid.get("defenses", {})}
    for _, d in gpu.AA_HEADLINE:
        plugin = make_defense(d, tables.get(d))
        kind = gpu.AA_KIND.get(d, ())
        assert plugin.identity == ("identity" in kind), d
        assert plugin.differentiable == ("no-gradient" not in kind), d
        assert plugin.randomized == ("randomized" in kind), d


def test_aa_config_is_the_grids_plus_countergan_adaptive_long(tmp_path):
    ctx = gpu.Ctx(gpu.parser().parse_args(["--work", str(tmp_path), "--device", "cpu"]))
    defenses = [d for u in gpu.plan_aa() for d in u["defenses"]]
    doc = tomllib.loads(gpu.aa_config(ctx, defenses).read_text())
    grid = tomllib.loads(gpu.AA_GRID.read_text())
    base = tomllib.loads((ROOT / "bench.toml").read_text())
    assert doc["classifier"] == grid["classifier"] and "attacks" not in doc and "grid" not in doc
    long = "countergan-adaptive-long"
    assert doc["defenses"] == {**grid["defenses"], long: base["defenses"][long]}
    assert {k: v for k, v in doc["run"].items()} == {k: v for k, v in grid["run"].items() if k != "results_dir"}


def test_aa_coverage_counts_squares_white_box_cell_under_bpda():
    def cell(attack, threat, n=8):
        return {
            "classifier": "c",
            "defense": "d",
            "attack": attack,
            "threat": threat,
            "eps": 0.3,
            "limit": n,
            "kind": "cell",
            "time": 1,
        }

    recs = [cell(a, "white") for a in gpu.AA_COMPONENTS] + [cell(a, "bpda") for a in gpu.AA_COMPONENTS[:3]]
    recs += [cell(a, "gray") for a in gpu.AA_COMPONENTS[:3]] + [cell("aa-square", "gray", n=64)]
    cells = gpu.aa_cells(recs + [{**cell("aa", "white"), "kind": "worst"}], 8)
    assert gpu.aa_complete(cells, "c", "d", "white") and gpu.aa_complete(cells, "c", "d", "bpda")
    assert not gpu.aa_complete(cells, "c", "d", "gray")  # its Square cell is on other images
    assert not gpu.aa_complete(cells, "c", "d", "bpda-eot")


def _ctx_with_records(tmp_path):
    ctx = gpu.Ctx(gpu.parser().parse_args(["--dry-run", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]))
    run = ctx.work / "steps" / "stepaa-autoattack" / "runs" / "r1"
    (run / "samples").mkdir(parents=True)
    (run / "records.jsonl").write_text('{"defense": "bitdepth", "attack": "aa-apgd-ce"}\n')
    (run / "samples" / "k.npz").write_bytes(os.urandom(96 * 1024))  # incompressible
    ctx.out.mkdir(parents=True)
    return ctx


def test_a_failing_report_keeps_the_records_and_the_pack(tmp_path, monkeypatch):
    """The previous GPU run's report crashed (pandas 3 / pyarrow): the records are merged and packed
    before the report is drawn, whatever the report does."""
    for outcome in ((1, "Traceback … pyarrow", False), RuntimeError("report exploded")):
        ctx = _ctx_with_records(tmp_path / type(outcome).__name__)

        def report(*_a, outcome=outcome, **_k):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        monkeypatch.setattr(gpu, "run", report)
        gpu.finish(ctx, [])
        summary = json.loads((ctx.out / "summary.json").read_text())
        assert summary["report"].startswith("failed"), summary
        with tarfile.open(ctx.out / "gpu-results.tar.gz") as tar:
            names = tar.getnames()
            assert "gpu-results/results/runs/r1/records.jsonl" in names
            assert tar.extractfile("gpu-results/results/runs/r1/records.jsonl").read().startswith(b'{"defense"')


def test_an_oversized_pack_drops_the_sample_images_not_the_records(tmp_path, monkeypatch):
    ctx = _ctx_with_records(tmp_path)
    monkeypatch.setattr(gpu, "MAX_FILE", 64 * 1024)
    ctx.pack()
    with tarfile.open(ctx.out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu-results/steps/stepaa-autoattack/runs/r1/records.jsonl" in names
    assert not any("/samples/" in n for n in names)
    assert (ctx.out / "gpu-results.tar.gz").stat().st_size <= 64 * 1024
    assert json.loads((ctx.out / "summary.json").read_text())["packed_without"] == ["samples", "plots"]


def test_earlier_leases_cells_are_taken_from_the_store_and_not_packed(tmp_path):
    prior = tmp_path / "gpu"
    keep = prior / "2026-12-04-h200" / "autoattack-n500" / "runs" / "r-aa"
    other = prior / "2026-12-04-h200" / "default-grid" / "runs" / "r-fgsm"
    for run, attack in ((keep, "aa-apgd-ce"), (other, "fgsm")):
        run.mkdir(parents=True)
        (run / "records.jsonl").write_text(json.dumps({"attack": attack, "limit": 500}) + "\n")
    ctx = gpu.Ctx(gpu.parser().parse_args(["--dry-run", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]))
    results = ctx.step_results("stepaa-autoattack")
    assert gpu.aa_seed(results, 8, prior) == []
    assert gpu.aa_seed(results, 500, prior) == ["r-aa"]
    assert (results / "runs" / "r-aa" / "records.jsonl").is_file() and not (results / "runs" / "r-fgsm").exists()
    ctx.seeded.add("r-aa")
    ctx.out.mkdir(parents=True)
    gpu.merge(ctx)
    ctx.pack()
    with tarfile.open(ctx.out / "gpu-results.tar.gz") as tar:
        assert not any("r-aa" in n for n in tar.getnames())
