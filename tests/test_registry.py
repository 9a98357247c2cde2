import pytest

from bench.core.errors import BenchError
from bench.core.registry import ATTACKS, DEFENSES, Registry, build


def test_duplicate_names_are_refused():
    reg = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("B", (), {}))


def test_unknown_name_suggests_and_lists():
    import defenses  # noqa: F401

    with pytest.raises(BenchError) as e:
        DEFENSES.get("nonee")
    msg = str(e.value)
    assert "did you mean none" in msg and "available: " in msg and "none" in msg


def test_external_plugin_import_errors_are_clear():
    with pytest.raises(BenchError, match="cannot import defense plugin module"):
        DEFENSES.get("no_such_module_xyz:Thing")
    with pytest.raises(BenchError, match="has no class"):
        DEFENSES.get("json:NoSuchClass")


def test_build_validates_parameter_names_and_types():
    import attacks  # noqa: F401

    with pytest.raises(BenchError, match=r"unknown parameter.*stepz.*valid: .*steps"):
        build(ATTACKS, "pgd", {"stepz": 3})
    with pytest.raises(BenchError, match="invalid parameter steps='ten'"):
        build(ATTACKS, "pgd", {"steps": "ten"})
    with pytest.raises(BenchError, match="invalid parameters for attack 'pgd'"):
        build(ATTACKS, "pgd", {"steps": -1})
    pgd = build(ATTACKS, "pgd", {"steps": 7})
    assert pgd.steps == 7 and pgd.hparams["steps"] == 7 and pgd.hparams["random_start"] is True


def test_a_variant_is_a_table_row_that_pickles_like_a_class():
    """Registry.variant: the built-in variant is reachable as module.ClassName (plain pickle, a
    process executor), carries its defaults, and refuses a default its base does not have."""
    import pickle

    import pytest

    from bench.core.registry import DEFENSES, Registry

    cls = DEFENSES.get("countergan-linear-bce")
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.__qualname__ == "CounterGANLinearBCE" and cls.preset["gan_loss"] == "bce"
    with pytest.raises(ValueError, match=r"unknown parameter.*colour"):
        Registry("defense").variant("x", cls.__mro__[1], preset={"colour": 1}, doc="", class_name="X")


def test_unknown_name_of_a_kind_without_entry_points_still_names_it_and_what_exists():
    """The message of a registry with no entry-point group (classifiers, datasets) kept only its
    last clause once: the conditional took the whole concatenated string."""
    from bench.core.errors import BenchError
    from bench.core.registry import Registry

    reg = Registry("classifier")
    reg.register("resnet18")(type("Net", (), {}))
    with pytest.raises(
        BenchError,
        match=r"unknown classifier 'nonexistent-net'; available: resnet18 \(or an external plugin as module:ClassName\)$",
    ):
        reg.get("nonexistent-net")


def test_a_cascade_is_declared_once_with_its_suite():
    """One way to declare a cascade: ``suite(..., cascade=True)``; the planner, the worst-case
    rows and verify read ``cascades()``; a plain suite runs every member on every image."""
    from bench.core.registry import ATTACKS, Registry

    assert ATTACKS.cascades()["aa"] == ATTACKS.suites["aa"][0]
    assert "aa-individual" in ATTACKS.suites and "aa-individual" not in ATTACKS.cascades()
    reg = Registry("attack")
    reg._table.update({"a": object, "b": object})  # members only need to be registered names here
    reg.suite("both", ("a", "b"), "each on every image")
    reg.suite("chain", ("a", "b"), "b on what a left robust", cascade=True)
    assert reg.cascades() == {"chain": ("a", "b")} and set(reg.suites) == {"both", "chain"}
