"""The shipped weights zoo (bench/core/shipped.py): used only when identity and hash fit."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.builtin.classifiers import Recipe, get_classifier
from bench.builtin.data import MNIST, Data, Split
from bench.core import identity, shipped
from bench.core.checkpoint import save_state, state_hash

ROOT = Path(__file__).resolve().parent.parent


def tiny_data() -> Data:
    d = MNIST().load(Path("/nonexistent-data-root"), offline=True)
    small = lambda s, n: Split(F.avg_pool2d(s.x[:n], 2), s.y[:n], "tiny")
    return Data("tiny", small(d.train, 256), small(d.test, 16), "tiny")


def tiny_spec() -> MNIST:
    spec = MNIST()
    spec.shape = (1, 14, 14)
    return spec


def ship(zoo: Path, model: torch.nn.Module, ident: dict, name: str = "mnist-cnn") -> Path:
    """Write a zoo entry the way `bench weights --ship` does (file + provenance)."""
    stem = shipped.stem("classifier", "tiny", name)
    path = zoo / f"{stem}.pt"
    save_state(model, path)
    meta = {
        "file": path.name,
        "sha256": shipped.sha256_file(path),
        "key": identity.key(ident),
        "identity": ident,
        "weights_hash": state_hash(model),
    }
    (zoo / f"{stem}.json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def trained(tmp_path):
    """A tiny classifier trained once (its info names its identity) and a zoo that ships it."""
    data, spec, recipe = tiny_data(), tiny_spec(), Recipe(epochs=1, batch_size=128)
    model, info = get_classifier("mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), tmp_path / "cache0")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    return data, spec, recipe, model, info, zoo


def test_a_fitting_shipped_model_is_used_and_records_say_its_sha(trained, tmp_path, capsys):
    data, spec, recipe, model, info, zoo = trained
    path = ship(zoo, model, info["classifier_identity"])
    _, got = get_classifier("mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), tmp_path / "empty", zoo_dir=zoo)
    assert got["classifier_source"] == f"shipped:{shipped.sha256_file(path)}"
    assert got["classifier_hash"] == info["classifier_hash"]
    assert "shipped weights" in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()  # nothing trained, nothing cached


def test_a_shipped_file_with_a_wrong_hash_is_not_used(trained, tmp_path, capsys):
    data, spec, recipe, model, info, zoo = trained
    path = ship(zoo, model, info["classifier_identity"])
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte: the sha256 no longer matches the provenance
    path.write_bytes(bytes(raw))
    _, got = get_classifier("mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), tmp_path / "fresh", zoo_dir=zoo)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "not using the shipped" in ln]
    assert len(lines) == 1 and "sha256" in lines[0] and "training on demand" in lines[0]
    assert got["classifier_source"].startswith("trained:")


def test_a_shipped_file_for_another_identity_is_not_used(trained, tmp_path, capsys):
    data, spec, recipe, model, info, zoo = trained
    other = {**info["classifier_identity"], "recipe": {**info["classifier_identity"]["recipe"], "epochs": 7}}
    ship(zoo, model, other)
    _, got = get_classifier("mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), tmp_path / "fresh", zoo_dir=zoo)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "not using the shipped" in ln]
    assert len(lines) == 1 and "recipe.epochs: 7 → 1" in lines[0]
    assert got["classifier_source"].startswith("trained:")


def test_retrain_skips_zoo_and_cache_and_gives_the_same_weights_twice(trained, tmp_path):
    data, spec, recipe, model, info, zoo = trained
    ship(zoo, model, info["classifier_identity"])
    cache = tmp_path / "cache1"
    hashes = []
    for _ in range(2):
        _, got = get_classifier(
            "mnist-cnn", spec, data, recipe, 0, torch.device("cpu"), cache, zoo_dir=zoo, retrain=True
        )
        assert got["classifier_source"].startswith("trained:")
        hashes.append(got["classifier_hash"])
    assert hashes[0] == hashes[1] == info["classifier_hash"]


def test_a_shipped_countergan_has_no_discriminator_and_loads(tmp_path):
    import defenses  # noqa: F401
    from bench.core.checkpoint import load_state
    from bench.core.registry import DEFENSES, build

    spec = MNIST()
    torch.manual_seed(0)
    a = build(DEFENSES, "countergan-linear-bce", {})
    a.setup(spec)
    save_state(a, tmp_path / "g.pt", ignore=a.training_only)
    saved = torch.load(tmp_path / "g.pt", weights_only=True)
    assert saved and not any(k.startswith("D.") for k in saved)
    torch.manual_seed(1)
    b = build(DEFENSES, "countergan-linear-bce", {})
    b.setup(spec)
    load_state(b, tmp_path / "g.pt", ignore=b.training_only)
    assert state_hash(a, a.training_only) == state_hash(b, b.training_only)
    assert state_hash(a) != state_hash(b)  # the discriminators differ, and are not part of the defense


# Shipped before the zoo's clean-commit rule, by a run whose records say so; frozen, never extended.
# DefenseGAN's generator came from the training-curve run of 2026-11-28 (its records:
# docs/defensegan-curve/runs/20261128T133713Z-0a4afb, commit 6a68972-dirty, no CPU model recorded)
# and moved into the zoo unchanged (issue 39). Re-training it from a clean commit gives other
# weights, so another pretrained_sha256 and a new key for every DefenseGAN cell stored.
# Keyed by the file's sha256: a re-shipped file is held to the rule.
BEFORE_THE_RULE = {
    "a343dd38f5846a78f9e93dee3adcf52ce6aac0bc591c6dd89094e9397fed3ccb": ("git_commit", "cpu_model"),
}


def test_every_shipped_file_checks_and_names_a_clean_commit():
    """The committed zoo: each file's sha256 is its provenance's, each came from a clean commit."""
    entries = shipped.entries()
    assert {m["sha256"] for m in entries} >= set(BEFORE_THE_RULE)
    for m in entries:
        path = shipped.ZOO_DIR / m["file"]
        assert m["kind"] in shipped.KINDS and m["file"] == f"{shipped.stem(m['kind'], m['dataset'], m['name'])}.pt"
        assert shipped.sha256_file(path) == m["sha256"], m["file"]
        exempt = BEFORE_THE_RULE.get(m["sha256"], ())
        assert m["git_commit"] and (not m["git_commit"].endswith("-dirty") or "git_commit" in exempt), m["file"]
        assert m["key"] == identity.key(m["identity"])
        for k in ("command", "train_seconds", "device", "cpu_model", "torch_threads", "data_fingerprint"):
            assert m.get(k) is not None or k in exempt, (m["file"], k)
    total = sum((shipped.ZOO_DIR / m["file"]).stat().st_size for m in entries)
    assert total < 80 * 2**20  # the zoo stays modest


def test_reference_records_are_refused_from_a_dirty_tree(monkeypatch, tmp_path):
    from bench.core.errors import BenchError
    from bench.store import runs as store

    monkeypatch.setattr(store, "git_state", lambda: ("abc", ["bench/driver.py"]))
    with pytest.raises(BenchError, match=r"dirty tree.*bench/driver.py"):
        store.refuse_dirty_reference(ROOT / "results" / "reference" / "default")
    store.refuse_dirty_reference(tmp_path / "results")  # anywhere else: allowed


def test_env_names_cpu_threads_and_blas():
    from bench.store.provenance import make_env

    env = make_env(["--x"], torch.device("cpu"), 0)
    assert env["cpu_model"] and env["torch_threads"] == torch.get_num_threads() and env["blas"]


def test_bench_weights_ships_then_finds_its_retraining_identical(monkeypatch, tmp_path, capsys):
    """`bench weights --ship` into a (temporary) zoo, then `bench weights` again: every model is
    retrained and compared with what was shipped, and a CPU retraining is bit-identical."""
    from bench.cli import main
    from bench.run import weights

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "zoo.toml").write_text(
        '[[model]]\ndataset = "mnist"\nclassifier = "mnist-cnn"\ndefenses = ["countergan-linear-bce"]\n'
    )
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "[classifier]\nepochs = 1\nbatch_size = 256\n"
        "[defenses.countergan-linear-bce]\niterations = 3\nbatch_size = 32\n"
    )
    monkeypatch.setattr(shipped, "ZOO_DIR", zoo)
    monkeypatch.setattr(weights, "PLAN", zoo / "zoo.toml")
    monkeypatch.setattr(weights, "git_state", lambda: ("c0ffee", []))
    assert main(["weights", "--ship", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "nothing shipped to compare with" in out and (zoo / "defense-mnist-countergan-linear-bce.pt").is_file()
    meta = json.loads((zoo / "classifier-mnist-mnist-cnn.json").read_text())
    assert (
        meta["git_commit"] == "c0ffee" and meta["torch_threads"] == 1 and meta["command"][-2:] == ["--config", str(cfg)]
    )
    assert main(["weights", "--config", str(cfg)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[weights] mnist/")]
    assert len(lines) == 2 and all("identical to the shipped weights" in ln for ln in lines)
    monkeypatch.setattr(weights, "git_state", lambda: ("c0ffee", ["bench/x.py"]))
    assert main(["weights", "--ship", "--config", str(cfg)]) == 2  # never shipped from a dirty tree
    assert main(["weights", "--only", "mnist/nope"]) == 2


def test_every_shipped_defense_keeps_its_fit_key_under_todays_code(monkeypatch):
    """A refactor (a variant moved from a subclass into a table, a module moved) must not change
    what a shipped defense's key is: every zoo defense, built from today's registry and bench.toml,
    has the fit key its provenance file was shipped under (its stored identity still hashes to it),
    and the identity it is found under names the plugin by its registered name, never a module —
    also once its class has moved to another module."""
    import tomllib

    from bench.core.registry import DATASETS
    from bench.run.plan import fit_ident, make_defense

    tables = tomllib.loads((ROOT / "bench.toml").read_text()).get("defenses", {})
    checked = 0
    for meta_path in sorted((ROOT / "bench" / "zoo").glob("defense-*.json")):
        meta = json.loads(meta_path.read_text())
        ident = meta["identity"]
        assert identity.key(ident) == meta["key"], f"{meta_path.name}: its stored identity no longer hashes to its key"
        name = meta["name"]
        d = make_defense(name, tables.get(name))
        d.setup(DATASETS.get(meta["dataset"])())
        ours = fit_ident(d, ident["classifier"], ident["data"], ident["seed"])
        assert identity.key(ours) == meta["key"], f"{meta_path.name}: fit key changed"
        assert ours["plugin"] == type(d).registered_name and "." not in ours["plugin"], ours["plugin"]
        assert {k: v for k, v in ours.items() if k != "plugin"} == {k: v for k, v in ident.items() if k != "plugin"}
        monkeypatch.setattr(type(d), "__module__", "somewhere.else.entirely")  # the file moved
        assert identity.key(fit_ident(d, ident["classifier"], ident["data"], ident["seed"])) == meta["key"]
        monkeypatch.undo()
        found = shipped.find("defense", meta["dataset"], name, ours)  # what a run looks the zoo up with
        assert found is not None and found.sha256 == meta["sha256"], meta_path.name
        checked += 1
    assert checked >= 9


def test_every_shipped_classifier_keeps_its_recipe_under_todays_code():
    """The classifier variants (a table of recipes over one architecture) resolve to the recipes
    their shipped weights were trained with, from today's registry and bench.toml."""
    import tomllib
    from dataclasses import asdict

    from bench.builtin.classifiers import recipe_identity, resolve_recipe

    cfg = tomllib.loads((ROOT / "bench.toml").read_text())
    checked = 0
    for meta_path in sorted((ROOT / "bench" / "zoo").glob("classifier-*.json")):
        ident = json.loads(meta_path.read_text())["identity"]
        recipe = resolve_recipe(
            ident["arch"], cfg.get("classifier", {}), cfg.get("classifiers", {}).get(ident["arch"], {})
        )
        assert recipe_identity(asdict(recipe)) == ident["recipe"], meta_path.name
        checked += 1
    assert checked >= 4


def test_no_shipped_manifest_names_a_module_path():
    """Issue 39: a zoo file's identity names its plugin by its registered name (the file, as
    committed, not only as read back), and nothing in it is a Python path of a built-in class."""
    from bench.core.registry import DEFENSES

    legacy = set(identity.LEGACY_FIT_PLUGIN.values())
    for meta_path in sorted(shipped.ZOO_DIR.glob("*.json")):
        raw = json.loads(meta_path.read_text())
        assert not any(path in meta_path.read_text() for path in legacy), meta_path.name
        if raw.get("kind") == "defense":
            assert raw["identity"]["plugin"] in DEFENSES, meta_path.name


def test_upgrade_rewrites_an_old_layout_in_todays_with_the_same_key(tmp_path, capsys, monkeypatch):
    """A manifest written before issue 39 (its plugin a Python path) is found as it is, read back
    under the registered name, and `bench weights --upgrade` rewrites it with the same key; a
    second upgrade changes nothing."""
    from bench.cli import main
    from bench.run.weights import upgrade

    ident = identity.fit_identity("countergan", {"a": 1}, "c", "d", 0, 1)
    old = {**ident, "plugin": identity.LEGACY_FIT_PLUGIN["countergan"]}
    assert identity.key(old) == identity.key(ident)
    weights = tmp_path / "defense-mnist-countergan.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    meta = {"file": weights.name, "sha256": shipped.sha256_file(weights), "key": identity.key(old), "identity": old}
    (tmp_path / "defense-mnist-countergan.json").write_text(json.dumps(meta))
    found = shipped.find("defense", "mnist", "countergan", ident, tmp_path)
    assert found is not None and found.provenance["identity"]["plugin"] == "countergan"
    monkeypatch.setattr(shipped, "ZOO_DIR", tmp_path)
    assert main(["weights", "--upgrade"]) == 0
    after = json.loads((tmp_path / "defense-mnist-countergan.json").read_text())
    assert after == {**meta, "identity": ident} and "1 provenance file(s) upgraded" in capsys.readouterr().out
    assert shipped.find("defense", "mnist", "countergan", ident, tmp_path) is not None
    assert upgrade(tmp_path) == []
    # An upgrade that would change a key is refused before anything is written.
    (tmp_path / "defense-mnist-countergan.json").write_text(json.dumps({**meta, "key": "0" * 16}))
    assert main(["weights", "--upgrade"]) == 2
    assert json.loads((tmp_path / "defense-mnist-countergan.json").read_text())["key"] == "0" * 16


def test_a_provenance_file_that_is_not_an_object_is_unreadable_not_a_crash(tmp_path, capsys):
    (tmp_path / "defense-mnist-x.json").write_text("[]")
    assert shipped.find("defense", "mnist", "x", {"kind": "defense-fit"}, tmp_path) is None
    assert "unreadable" in capsys.readouterr().out
