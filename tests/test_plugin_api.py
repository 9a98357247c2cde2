"""bench.plugin and plugin identity (issue 39): a defense in its own pip package, written against
``bench.plugin`` and declared by an entry point, runs by name and is listed; the registry checks a
plugin's base class; a built-in is its file (no import by hand, no declaration); and a plugin is identified by its
registered name, so moving its file changes no key."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import read_records

from bench.cli import main
from bench.core import identity
from bench.core.errors import BenchError
from bench.core.registry import ATTACKS, DEFENSES, Registry, build, builtin_modules

ROOT = Path(__file__).resolve().parent.parent

SQUEEZE = '''
import torch
from bench.plugin import Defense


class Squeeze(Defense):
    """Squeeze each pixel to `bits` bits (one pip package's defense). Example: --defenses mine"""

    def __init__(self, *, bits: int = 1) -> None:
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x):
        return torch.round(x * self.levels) / self.levels


class NotADefense(torch.nn.Module):
    """Registered as a defense by mistake."""
'''


def fake_distribution(site: Path, name: str, modules: dict[str, str], entry_points: str) -> None:
    """What `pip install` leaves in site-packages: the package and its .dist-info with an
    entry_points.txt — the metadata importlib.metadata reads, offline and without a build."""
    for module, text in modules.items():
        (site / module).parent.mkdir(parents=True, exist_ok=True)
        (site / module).write_text(text)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A package `mine-defense` on sys.path, declaring `mine` in group defense_bench.defenses; the
    global registries are restored afterwards (they are copied, so whatever it registers goes)."""
    DEFENSES.load()
    ATTACKS.load()
    monkeypatch.setattr(DEFENSES, "_table", dict(DEFENSES._table))
    monkeypatch.setattr(ATTACKS, "_table", dict(ATTACKS._table))
    site = tmp_path / "site"
    fake_distribution(
        site,
        "mine_defense",
        {"minepkg/__init__.py": "", "minepkg/squeeze.py": SQUEEZE},
        """
        [defense_bench.defenses]
        mine = minepkg.squeeze:Squeeze
        wrong = minepkg.squeeze:NotADefense
        broken = minepkg.nowhere:Thing
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for m in [m for m in sys.modules if m == "minepkg" or m.startswith("minepkg.")]:
        del sys.modules[m]


def test_a_defense_in_its_own_package_runs_by_name_and_is_listed(installed, run_args, capsys):
    assert "mine" in DEFENSES.names() and "mine" in DEFENSES
    assert "minepkg" not in sys.modules  # named from the metadata: nothing imported to list a name
    assert main(run_args("--defenses", "none,mine", "--attack", "fgsm", "--eps", "0.3")) == 0
    recs = {r["defense"]: r for r in read_records(run_args.results) if r.kind == "cell"}
    assert recs["mine"]["identity"]["defense"] == "mine" and recs["mine"]["defense_params"] == {"bits": 1}
    assert recs["mine"]["defended_adv_acc"] > recs["none"]["defended_adv_acc"]  # it really ran
    assert "minepkg" not in str(recs["mine"]["identity"])  # identified by its name, not its module
    capsys.readouterr()
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  mine +Squeeze each pixel", out, re.M) and "params: bits=1" in out
    # A declared plugin that does not load is one line at list time, and its name's error on use.
    assert re.search(r"^  broken +\(cannot load: .*minepkg.nowhere", out, re.M)
    with pytest.raises(BenchError, match=r"cannot load defense 'broken'.*mine-defense.*ModuleNotFoundError"):
        DEFENSES.get("broken")


def test_an_entry_point_to_a_class_of_the_wrong_kind_is_refused(installed):
    with pytest.raises(BenchError, match=r"defense 'wrong'.*NotADefense is not a defenses.base.Defense subclass"):
        DEFENSES.get("wrong")
    assert "wrong" not in DEFENSES._table


def test_the_registry_checks_the_base_class_at_registration(monkeypatch):
    from bench.plugin import Attack, AttackPlugin, Defense, register_attack, register_defense

    monkeypatch.setattr(DEFENSES, "_table", dict(DEFENSES._table))
    monkeypatch.setattr(ATTACKS, "_table", dict(ATTACKS._table))
    with pytest.raises(TypeError, match=r"not a defenses.base.Defense subclass"):
        register_defense("not-a-defense")(type("Plain", (torch.nn.Module,), {}))
    with pytest.raises(TypeError, match=r"not a attacks.base.AttackPlugin subclass"):
        register_attack("not-an-attack")(type("Plain", (Defense,), {}))
    assert Attack is AttackPlugin
    assert register_defense("fine")(type("Fine", (Defense,), {})).registered_name == "fine"
    with pytest.raises(BenchError, match=r"not a defenses.base.Defense subclass"):
        DEFENSES.get("json:JSONDecoder")  # module:Class is checked too


def test_the_plugin_api_checks_the_shape_contract():
    from bench.plugin import ContractError, Defense, check_defense

    class Shrinks(Defense):
        def forward(self, x):
            return x[:, :, :-1]

    class Brightens(Defense):
        def forward(self, x):
            return x + 1

    class Keeps(Defense):
        def forward(self, x):
            return x.clamp(0, 1)

    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(check_defense(Keeps(), x), x)
    with pytest.raises(ContractError, match="'Shrinks' returned shape"):
        check_defense(Shrinks(), x)
    with pytest.raises(ContractError, match="values in"):
        check_defense(Brightens(), x)


def test_a_builtin_is_its_file_with_nothing_to_edit_elsewhere(tmp_path, monkeypatch):
    """Issue 39: a built-in plugin is one file in the plugin package, registered by its decorator;
    no import by hand, no declaration (pyproject.toml declares none of defense-bench's own). A
    registry over a package with a new file knows the new name at its first lookup."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "entry-points" not in project  # nothing to add there for a built-in
    for reg, package in ((DEFENSES, "defenses"), (ATTACKS, "attacks")):
        modules = builtin_modules(package)
        reg.load()
        assert {c.__module__ for c in reg._table.values()} <= set(modules) | {"attacks.generic"}
        assert f"{package}.base" in modules and all(m.startswith(f"{package}.") for m in modules)
    init = (ROOT / "defenses" / "__init__.py").read_text()
    assert not re.search(r"from defenses import \w+", init)  # no list of imports by hand
    # One new file in a plugin package: its name is known at the next first lookup, nothing else
    # written (a private module is not read).
    pkg = tmp_path / "site" / "newplugins"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "_private.py").write_text("raise RuntimeError('a private module is not a plugin')\n")
    body = SQUEEZE.split("class NotADefense")[0].replace(
        "class Squeeze", '@register_defense("squeeze-new")\nclass Squeeze'
    )
    (pkg / "squeeze.py").write_text(body.replace("import Defense", "import Defense, register_defense"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert builtin_modules("newplugins") == ["newplugins.squeeze"]
    monkeypatch.setattr(DEFENSES, "_table", dict(DEFENSES._table))
    monkeypatch.setattr(DEFENSES, "_package", "newplugins")
    assert "squeeze-new" in DEFENSES and build(DEFENSES, "squeeze-new", {"bits": 2}).levels == 3
    for m in ("newplugins", "newplugins.squeeze"):
        sys.modules.pop(m, None)


MOVER = '''
from bench.plugin import Defense


class Mover(Defense):
    """A trained defense whose file moves. Example: --defenses mover"""

    trainable = True

    def __init__(self, *, width: int = 4) -> None:
        super().__init__()
        self.width = width

    def forward(self, x):
        return x
'''


def keys_of(module: str, name: str = "mover") -> tuple[str, str]:
    """(fit key, cell key) of plugin ``name`` registered from ``module`` into a fresh registry."""
    from bench.run.plan import fit_key

    reg = Registry("defense", base="defenses.base:Defense")
    reg.register(name)(importlib.import_module(module).Mover)
    d = build(reg, name, {"width": 8})
    fit = fit_key(d, "clf0", "data0", 0)
    cell = identity.key(
        identity.cell_identity(
            data={"dataset": "mnist"},
            n=10,
            classifier="mnist-cnn",
            classifier_hash="clf0",
            defense=d.registered_name,
            defense_params=d.hparams,
            defense_fit=fit,
            defense_weights="w0",
            attack="fgsm",
            attack_params={},
            eps=0.3,
            norm="linf",
            attack_labels="true",
            threat="gray",
            eot_samples=None,
            seed=0,
            batch_size=32,
            device_type="cpu",
        )
    )
    assert fit is not None
    return fit, cell


def test_moving_a_plugins_file_changes_no_key(tmp_path, monkeypatch):
    """The same class, registered under the same name from another file (a package moved, a module
    renamed), has the same fit key and cell key; its identity names the name, not the file."""
    from bench.run.plan import fit_ident

    for module in ("oldplace/mover.py", "newplace/deeper/mover.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text(MOVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert keys_of("oldplace.mover") == keys_of("newplace.deeper.mover")
    assert keys_of("oldplace.mover") != keys_of("oldplace.mover", name="mover2")  # the name is the identity
    d = build(DEFENSES, "countergan", {})
    ident = fit_ident(d, "clf0", "data0", 0)
    assert ident is not None and ident["plugin"] == "countergan"
    before = identity.key(ident)
    monkeypatch.setattr(type(d), "__module__", "defenses.moved.elsewhere")  # a built-in's file moved
    assert identity.key(fit_ident(d, "clf0", "data0", 0)) == before
    for m in ("oldplace", "oldplace.mover", "newplace", "newplace.deeper", "newplace.deeper.mover"):
        sys.modules.pop(m, None)


def test_legacy_fit_keys_are_kept_by_a_frozen_table():
    """Keys stored before identities named plugins by their registered name are what the frozen
    table recomputes: a built-in's name hashes as its old Python path did, an external class given
    as module:Class as its dotted path did (caches trained then are found); any other name as itself."""
    fit = lambda plugin: identity.fit_identity(plugin, {"a": 1}, "c", "d", 0, 1)
    for name, legacy in identity.LEGACY_FIT_PLUGIN.items():
        assert identity.key(fit(name)) == identity.key(fit(legacy)) == identity.digest(fit(legacy))
        assert name in DEFENSES and DEFENSES.get(name).trainable
    assert identity.key(fit("pkg.mod:Thing")) == identity.digest(fit("pkg.mod.Thing"))
    assert identity.key(fit("mine")) == identity.digest(fit("mine"))
    # Every trainable built-in either has its legacy row or was registered after the table froze.
    cell = {"kind": "cell", "plugin": "countergan"}
    assert identity.key(cell) == identity.digest(cell)  # only fit identities are touched


def test_the_runner_keeps_where_weights_came_from_beside_the_plugin_not_on_it(run_args, monkeypatch):
    """Issue 39: a trained defense's fit state (source, fit key, weights hash) is the
    runner's (bench.run.plan.Fit): the records carry it, the plugin object gets none of it."""
    from bench.plugin import Defense

    seen: list[Defense] = []

    class Toyfit(Defense):
        """Adds a learnt constant, clamped to [0, 1]. Example: --defenses toyfit"""

        trainable = True

        def __init__(self, *, shift: float = 0.0) -> None:
            super().__init__()
            self.b = torch.nn.Parameter(torch.tensor(shift))

        def fit(self, train, classifier, *, device, seed, eps):
            seen.append(self)
            with torch.no_grad():
                self.b.fill_(0.01)
            return {"steps": 1}

        def forward(self, x):
            return (x + self.b).clamp(0, 1)

    monkeypatch.setattr(DEFENSES, "_table", dict(DEFENSES._table))
    DEFENSES.register("toyfit")(Toyfit)
    for source, again in (("trained:", ()), ("cache:", ("--rerun",))):
        args = run_args("--defenses", "toyfit", "--attack", "fgsm", "--threat", "gray", "--limit", "8", *again)
        assert main(args) == 0
        (rec,) = [r for r in read_records(run_args.results) if r["defense"] == "toyfit" and r["kind"] == "cell"][-1:]
        fit = rec["fit"]
        assert fit["defense_source"].startswith(source) and fit["defense_fit_key"] and fit["defense_weights_hash"]
        assert fit["defense_fit_key"] == rec["identity"]["defense_fit"]
    (plugin,) = seen  # trained once, then loaded from the cache
    assert not {"fit_info", "fit_identity", "fit"} & set(vars(plugin)), sorted(vars(plugin))
