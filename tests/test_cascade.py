"""AutoAttack as a cascade (``--attack aa``): each stage after APGD-CE runs only on the images the
earlier stages left robust, is a cell of its own (``cascade`` in its identity, ``ran_on`` in its
record) and agrees with the individual mode (``aa-individual``) image by image where an attack's
result on an image does not depend on its batch companions (batch size 1)."""

from __future__ import annotations

from conftest import read_records

from bench.cli import main
from bench.core import record
from bench.core.registry import ATTACKS

TINY_AA = (
    "[attacks.aa-apgd-ce]\nsteps = 3\n[attacks.aa-apgd-t]\nsteps = 2\n[attacks.aa-fab-t]\nsteps = 2\n"
    "[attacks.aa-square]\nn_queries = 10\n"
)


def _args(run_args, tmp_path, extra, *flags):
    path = tmp_path / "cascade.toml"
    path.write_text("[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n" + extra)
    args = run_args(*flags)
    args[args.index("--config") + 1] = str(path)
    return args


def bits(rec, outcome="defended_adv"):
    return record.decode(rec["correct"][outcome], rec["n"])


def test_the_cascade_runs_each_stage_on_the_images_still_robust_and_agrees_with_the_individual_mode(run_args, tmp_path):
    n = 8
    # Batch size 1: an image's result does not depend on its batch companions (APGD's and Square's
    # random starts are drawn per batch position), so both modes must agree image by image.
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                TINY_AA,
                "--defenses",
                "none,bitdepth",
                "--attack",
                "aa,aa-individual",
                "--eps",
                "0.3",
                "--threat",
                "white",
                "--limit",
                str(n),
                "--batch-size",
                "1",
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    stages = ATTACKS.cascades()["aa"]
    for defense in ("none", "bitdepth"):
        mine = [r for r in recs if r["defense"] == defense]
        cells = [r for r in mine if r["kind"] == "cell"]
        alone = {r["attack"]: r for r in cells if "cascade" not in r["identity"]}
        staged = {r["attack"]: r for r in cells if "cascade" in r["identity"] or r["attack"] == stages[0]}
        assert set(alone) == set(staged) == set(stages)
        # The first stage runs on every image: one cell, shared by both modes.
        assert staged[stages[0]] is alone[stages[0]] and "ran_on" not in alone[stages[0]]
        previous = staged[stages[0]]
        for i, name in enumerate(stages[1:], 1):
            cell = staged[name]
            assert cell["identity"]["cascade"] == [
                {"attack": m, "attack_params": staged[m]["attack_params"]} for m in stages[:i]
            ]
            assert cell["cascade"] == list(stages[:i]) and cell["cell_key"] != alone[name]["cell_key"]
            ran = record.decode(cell["ran_on"], n)
            # It ran exactly on the images the previous stages left robust …
            assert ran.tolist() == bits(previous).tolist(), (defense, name)
            # … elsewhere it keeps the previous stage's outcomes (robust after this stage) …
            for outcome in record.OUTCOMES:
                assert (bits(cell, outcome)[~ran] == bits(previous, outcome)[~ran]).all(), (defense, name, outcome)
            # … and where it ran it broke exactly what it breaks alone.
            assert bits(cell)[ran].tolist() == bits(alone[name])[ran].tolist(), (defense, name)
            if not ran.any():
                assert cell["attack_forward_per_sample"] == cell["attack_backward_per_sample"] == 0
            previous = cell
        (aa,) = [r for r in mine if r["attack"] == "aa"]
        (individual,) = [r for r in mine if r["attack"] == "aa-individual"]
        assert aa["attack_params"]["mode"] == "cascade" and "mode" not in individual["attack_params"]
        assert sorted(aa["identity"]["attack_params"]["cells"]) == sorted(r["cell_key"] for r in staged.values())
        assert bits(aa).tolist() == bits(previous).tolist()  # the per-image worst is the last stage
        assert bits(aa).tolist() == bits(individual).tolist(), defense  # batch size 1: no image differs
        # A cascade's passes per image are its stages' added up; fewer than every component on every image.
        assert aa["attack_forward_per_sample"] == sum(r["attack_forward_per_sample"] for r in staged.values())
        assert aa["attack_forward_per_sample"] <= individual["attack_forward_per_sample"]
    md = (run_args.results / "results.md").read_text()
    assert "aa-square 0.3 (cascade)" in md and "after aa-apgd-ce, aa-apgd-t, aa-fab-t; ran on" in md
    assert "attack fwd/img" in md and "cascade: robust after every stage" in md


def test_a_cascade_counts_passes_on_the_images_it_ran_on_and_keeps_a_gradient_free_stage_per_threat(
    run_args, tmp_path, monkeypatch
):
    """A toy cascade FGSM → PGD-3 → Square: FGSM makes 1 forward and 1 backward pass per image; PGD
    3 of each on the m images FGSM left robust (3m/n per test image); Square, gradient-free, no
    backward pass. Square's cascade stage is one cell per threat (its images are what that threat's
    earlier stages left), each counted in its own threat's rows only."""
    members = ("fgsm", "pgd", "torchattacks:Square")
    monkeypatch.setitem(ATTACKS.suites, "toy", (members, "a toy cascade"))
    monkeypatch.setitem(ATTACKS._cascades, "toy", members)
    n = 16
    extra = '[attacks.pgd]\nsteps = 3\n[attacks."torchattacks:Square"]\nn_queries = 20\nseed = 0\n'
    assert (
        main(
            _args(
                run_args,
                tmp_path,
                extra,
                "--defenses",
                "none,bitdepth",
                "--attack",
                "toy",
                "--eps",
                "0.1",
                "--threat",
                "white,bpda",
                "--limit",
                str(n),
            )
        )
        == 0
    )
    recs = read_records(run_args.results)
    ran_somewhere = False
    for r in (r for r in recs if r["kind"] == "cell"):
        if r["attack"] == "fgsm":
            assert (r["attack_forward_per_sample"], r["attack_backward_per_sample"]) == (1.0, 1.0)
            assert "cascade" not in r["identity"]
            continue
        m = int(record.decode(r["ran_on"], n).sum())
        ran_somewhere |= m > 0
        if r["attack"] == "pgd":
            assert r["attack_forward_per_sample"] == r["attack_backward_per_sample"] == 3 * m / n
        else:
            assert r["attack_backward_per_sample"] == 0 and (r["attack_forward_per_sample"] > 0) == (m > 0)
    assert ran_somewhere
    square = sorted((r["defense"], r["threat"]) for r in recs if r["attack"] == "torchattacks:Square")
    assert square == [("bitdepth", "bpda"), ("bitdepth", "white"), ("none", "bpda"), ("none", "white")]
    for defense in ("none", "bitdepth"):
        for threat in ("white", "bpda"):
            (row,) = [r for r in recs if r["attack"] == "toy" and r["defense"] == defense and r["threat"] == threat]
            parts = [r for r in recs if r["cell_key"] in row["identity"]["attack_params"]["cells"]]
            assert {r["threat"] for r in parts} == {threat} and len(parts) == 3
    # bitdepth has no useful gradient: white-box is BPDA, so its two cascades are one computation.
    sq = {r["threat"]: r for r in recs if r["attack"] == "torchattacks:Square" and r["defense"] == "bitdepth"}
    assert sq["white"]["correct"] == sq["bpda"]["correct"] and sq["white"]["cell_key"] != sq["bpda"]["cell_key"]


def test_stored_individual_cells_are_not_taken_for_cascade_ones(run_args, tmp_path, monkeypatch):
    """A stored individual PGD cell is not a cascade stage, and a rerun of the cascade reuses its own."""
    members = ("fgsm", "pgd")
    monkeypatch.setitem(ATTACKS.suites, "toy2", (members, "a toy cascade"))
    monkeypatch.setitem(ATTACKS._cascades, "toy2", members)
    extra = "[attacks.pgd]\nsteps = 2\n"
    assert main(_args(run_args, tmp_path, extra, "--attack", "fgsm,pgd", "--eps", "0.1", "--limit", "16")) == 0
    assert main(_args(run_args, tmp_path, extra, "--attack", "toy2", "--eps", "0.1", "--limit", "16")) == 0
    recs = read_records(run_args.results)
    pgd = [r for r in recs if r["attack"] == "pgd"]
    assert len(pgd) == 2 and sorted("cascade" in r["identity"] for r in pgd) == [False, True]
    assert len([r for r in recs if r["attack"] == "fgsm"]) == 1  # the first stage is the attack's own cell
    assert main(_args(run_args, tmp_path, extra, "--attack", "toy2", "--eps", "0.1", "--limit", "16")) == 0
    assert len([r for r in read_records(run_args.results) if r["kind"] == "cell"]) == 3
    assert len([r for r in recs if r["attack"] == "toy2"]) == 1


def test_a_deterministic_defense_crafts_each_stage_once_for_bpda_and_bpda_eot(run_args, tmp_path, monkeypatch):
    """BPDA and BPDA+EOT on a deterministic defense are one computation (drawn once): every stage
    of the cascade, the gradient-free one included, is crafted once and scored under both threats
    (the ranking grid's BPDA+EOT Square on bitdepth and countergan-adaptive)."""
    from bench.run.worker import Worker

    members = ("fgsm", "pgd", "torchattacks:Square")
    monkeypatch.setitem(ATTACKS.suites, "toy", (members, "a toy cascade"))
    monkeypatch.setitem(ATTACKS._cascades, "toy", members)
    crafted: list[str] = []
    real = Worker.craft

    def counting(self, model, attack, prep, group, *args, **kwargs):
        crafted.append(f"{group.attack} {group.threat}")
        return real(self, model, attack, prep, group, *args, **kwargs)

    monkeypatch.setattr(Worker, "craft", counting)
    extra = '[attacks.pgd]\nsteps = 3\n[attacks."torchattacks:Square"]\nn_queries = 20\nseed = 0\n'
    args = _args(run_args, tmp_path, extra, "--defenses", "bitdepth", "--attack", "toy", "--eps", "0.1")
    assert main([*args, "--threat", "bpda,bpda-eot", "--limit", "16"]) == 0
    assert sorted(crafted) == ["fgsm bpda", "pgd bpda", "torchattacks:Square bpda"]
    recs = [r for r in read_records(run_args.results) if r["kind"] == "cell"]
    by = {(r["attack"], r["threat"]): r for r in recs}
    for attack in members:
        assert by[(attack, "bpda")]["correct"] == by[(attack, "bpda-eot")]["correct"], attack
