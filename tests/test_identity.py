"""bench.core.identity: keys, and grouping records by what they share."""

from conftest import cells, grid, read_records

from bench.cli import main
from bench.core import identity


def cell(**kw):
    base = dict(
        data={"dataset": "mnist", "fingerprint": "f"},
        n=10,
        classifier="c",
        classifier_hash="h",
        defense="d",
        defense_params={},
        defense_fit=None,
        defense_weights=None,
        attack="pgd",
        attack_params={"steps": 40, "alpha": 0.01, "random_start": True},
        eps=0.3,
        norm="Linf",
        attack_labels="true",
        threat="gray",
        eot_samples=None,
        seed=0,
        batch_size=8,
        device_type="cpu",
    )
    base.update(kw)
    return {"identity": identity.cell_identity(**base)}


def test_group_key_varies_exactly_the_named_aspects():
    a, b = cell(), cell(defense="e", defense_weights="w")
    assert identity.group_key(a, ("defense",)) == identity.group_key(b, ("defense",))
    assert identity.group_key(a) != identity.group_key(b)
    fgsm = cell(attack="fgsm", attack_params={})
    assert identity.group_key(a, ("attack",)) == identity.group_key(fgsm, ("attack",))
    assert identity.group_key(a, ("defense",)) != identity.group_key(fgsm, ("defense",))
    more = cell(attack_params={"steps": 200, "alpha": 0.002, "random_start": True}, n=20)
    assert identity.group_key(a, ("budget", "n")) == identity.group_key(more, ("budget", "n"))
    other = cell(attack_params={"steps": 40, "alpha": 0.01, "random_start": False})
    assert identity.group_key(a, ("budget", "n")) != identity.group_key(other, ("budget", "n"))


def test_a_record_without_identity_is_grouped_by_the_fields_it_has():
    a = {"dataset": "mnist", "defense": "d", "attack": "pgd", "eps": 0.3, "n": 5, "defense_weights_hash": "w1"}
    b = {**a, "defense_weights_hash": "w2"}
    assert identity.of_record(a)["data"] == {"dataset": "mnist"}
    assert identity.group_key(a) != identity.group_key(b)  # two trainings are two cells
    assert identity.group_key(a, ("defense",)) == identity.group_key(b, ("defense",))
    assert identity.group_key({**a, "eps": float("nan")}) == identity.group_key(
        {k: v for k, v in a.items() if k != "eps"}
    )


def test_aspect_of_matches_nested_fields():
    assert identity.aspect_of("attack_params.steps", "attack")
    assert identity.aspect_of("attack_params.steps", "budget") and not identity.aspect_of(
        "attack_params.random_start", "budget"
    )
    assert identity.aspect_of("defense_weights", "defense") and not identity.aspect_of("defensex", "defense")


# --- moved from the former tests/test_trust.py ---------------------------------------


def test_every_identity_field_makes_a_new_cell(run_args, tmp_path, capsys):
    assert main(grid(run_args)) == 0
    assert "computed 1 cell(s)" in capsys.readouterr().out
    assert main(grid(run_args)) == 0  # the same flags: taken from the store, and said so
    out = capsys.readouterr().out
    assert "computed 0 cell(s); took 1 from the store" in out and "--rerun" in out
    steps = tmp_path / "steps.toml"
    steps.write_text(
        "[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n[attacks.pgd]\nsteps = 3\n"
    )
    variants = [
        {"limit": "12"},  # n
        {"eps": "0.1"},  # eps
        {"attack": "pgd"},  # attack
        {"attack": "pgd", "config": str(steps)},  # an attack parameter
        {"threat": "white"},  # threat
        {"attack_labels": "predicted"},  # labels the attack was crafted with
        {"seed": "1"},  # seed (and so the classifier)
        {"batch_size": "8"},  # batch size: random starts are seeded per batch
        {"defenses": "trust_plugins:Jitter"},  # defense
        {"defenses": "trust_plugins:Jitter", "threat": "bpda-eot", "eot_samples": "2"},
        {"defenses": "trust_plugins:Jitter", "threat": "bpda-eot", "eot_samples": "3"},  # EOT draws
    ]
    for i, flags in enumerate(variants, start=2):
        assert main(grid(run_args, **flags)) == 0, flags
        assert len(cells(run_args.results)) == i, flags
    assert len({r["cell_key"] for r in cells(run_args.results)}) == len(variants) + 1


def test_identity_covers_device_type_and_deterministic_eot():
    from bench.builtin.data import MNIST
    from bench.core.config import Config
    from bench.run.plan import make_attack, make_defense, plan

    spec = MNIST()
    cfg = Config(threat=["bpda-eot"], eps=[0.3])
    attacks = {"fgsm": make_attack("fgsm", None)}
    defs = {"none": make_defense("none", None)}

    def keys(device_type, eot):
        cfg.eot_samples = eot
        (g,) = plan(cfg, spec, {"dataset": "mnist"}, 10, "mnist-cnn", "h", attacks, defs, {}, device_type)
        return g.cells[0]

    assert keys("cpu", 8).key != keys("cuda", 8).key
    # A deterministic defense is drawn once: more requested draws change nothing.
    assert keys("cpu", 8).eot_samples == 1 and keys("cpu", 8).key == keys("cpu", 4).key


def test_countergan_checkpoint_does_not_depend_on_the_rest_of_the_grid(run_args, tmp_path):
    toml = tmp_path / "cg.toml"
    toml.write_text(
        "[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n"
        "[defenses.countergan]\niterations = 15\nbatch_size = 256\n"
        "[defenses.countergan-linear-mse]\niterations = 15\nbatch_size = 256\n"
    )
    hashes = []
    for i, defenses in enumerate(("countergan", "countergan-linear-mse,none,countergan")):
        args = run_args("--defenses", defenses, "--attack", "fgsm", "--eps", "0.1", "--limit", "8")
        args[args.index("--config") + 1] = str(toml)
        args[args.index("--results-dir") + 1] = str(tmp_path / f"r{i}")
        args[args.index("--cache-dir") + 1] = str(tmp_path / f"cache{i}")  # both train from scratch
        assert main(args) == 0
        (rec,) = [r for r in read_records(tmp_path / f"r{i}") if r["defense"] == "countergan"]
        assert rec["fit"]["defense_source"].startswith("trained:")
        assert rec["defense_params"]["train_eps"] == 0.3 and rec["defense_params"]["train_attack"] == "fgsm"
        hashes.append(rec["fit"]["defense_weights_hash"])
    assert hashes[0] == hashes[1]


def test_every_committed_record_keeps_its_cell_key_and_fit_key():
    """Identity by registered name (issue 39) changed no stored key: every committed record's
    stored identity hashes to its cell key, and every trained defense's fit key is what today's
    code makes of its name and hyperparameters (the frozen legacy table, identity.LEGACY_FIT_PLUGIN,
    keeps the keys made when identities named a module path)."""
    import json
    from pathlib import Path

    from bench.core.registry import DEFENSES
    from bench.run.plan import plugin_name

    root = Path(__file__).resolve().parent.parent / "results"
    checked = fits = 0
    for path in sorted(root.glob("**/records.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            ident = rec["identity"]
            assert identity.key(ident) == rec["cell_key"], f"{path}: {rec['defense']} {rec['attack']}"
            checked += 1
            if ident.get("defense_fit"):
                hp = ident["defense_params"]
                cls = DEFENSES.get(hp.get("plugin", ident["defense"]))
                fit = {k: v for k, v in hp.items() if cls.fit_params is None or k in cls.fit_params}
                ours = identity.fit_identity(
                    plugin_name(cls),
                    fit,
                    ident["classifier_hash"],
                    rec["data_fingerprint"],
                    ident["seed"],
                    cls.training_version,
                )
                assert "." not in ours["plugin"]  # a registered name, never a module path
                assert identity.key(ours) == ident["defense_fit"], f"{path}: {rec['defense']} fit key"
                fits += 1
    assert checked > 1000 and fits > 500
