"""Plugin registries: one per kind, duplicates refused, unknown names explained.

A plugin is a class registered under the string users type on the command line::

    @register_defense("countergan")
    class CounterGAN(Defense): ...

Where plugins come from:

* built-ins: the modules of defense-bench's own plugin packages (``defenses/``, ``attacks/``),
  every one imported on first lookup, in name order — a new built-in is its file, with no line to
  add anywhere else (no import by hand, no declaration);
* a pip-installed package: its entry point in the group ``defense_bench.defenses`` (or
  ``…attacks``), ``mine = "pkg.mod:Mine"``, used as ``--defenses mine`` (loaded when the name is
  not a built-in, or when ``bench list`` runs): declared, never searched for;
* any class on the path: ``package.module:ClassName``.

A plugin is identified by its registered name (a built-in's, an entry point's) and never by the
module it lies in; a class given as ``module:Class`` has no other name.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from bench.core.errors import BenchError


class Registry:
    """A name → class table for one plugin kind (``"defense"``, ``"attack"`` …)."""

    def __init__(
        self,
        kind: str,
        builtins: str | None = None,
        *,
        group: str | None = None,
        base: str | None = None,
        package: str | None = None,
    ) -> None:
        self.kind = kind
        self._table: dict[str, type] = {}
        # The module that registers the built-in plugins of this kind, imported on first lookup:
        # a named module (explicit discovery, no scanning), so a lookup never depends on what
        # the caller happened to import first.
        self._builtins = builtins
        # The entry-point group of this kind: an installed package's plugins, loaded by name when
        # asked for.
        self.group = group
        # The package whose modules are the built-ins of this kind (all imported on first lookup).
        self._package = package
        # ``module:Class`` every plugin of this kind must subclass, checked at registration
        # (imported then: the core never imports a plugin package).
        self._base = base
        # name → (member names, description): a suite runs its members as cells of their own and
        # is combined per sample into one row named after it (AutoAttack's ``aa``).
        self.suites: dict[str, tuple[tuple[str, ...], str]] = {}
        self._cascades: dict[str, tuple[str, ...]] = {}  # the suites run as a cascade (``suite(cascade=True)``)
        # An installed package's entry point that failed to load when every plugin was listed → why.
        self.unloadable: dict[str, str] = {}

    def load(self) -> None:
        """Import the built-ins of this kind (once; every lookup does it first)."""
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)
        if self._package is not None:
            package, self._package = self._package, None
            for module in builtin_modules(package):
                importlib.import_module(module)

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        """Load an installed package's plugin: ``module:Class`` is registered under the entry
        point's name; a module registers its plugins itself, the entry point's name among them."""
        loaded = ep.load()
        if inspect.isclass(loaded) and self._table.get(ep.name) is not loaded:
            self.register(ep.name)(loaded)
        if ep.name not in self._table and ep.name not in self.suites:
            raise BenchError(f"entry point {ep.name} = {ep.value!r} ({ep.group}) registers no {self.kind} {ep.name!r}")

    def _plugin_entry_points(self) -> dict[str, metadata.EntryPoint]:
        """Other distributions' entry points of this kind not shadowed by a built-in, by name."""
        if self.group is None:
            return {}
        return {
            ep.name: ep
            for ep in metadata.entry_points(group=self.group)
            if _dist_name(ep) != DISTRIBUTION and ep.name not in self._table and ep.name not in self.suites
        }

    def _from_entry_point(self, name: str) -> type | None:
        ep = self._plugin_entry_points().get(name)
        if ep is None:
            return None
        try:
            self._load_entry_point(ep)
        except BenchError:
            raise
        except Exception as exc:  # an installed plugin that does not load is its package's error, said in one line
            raise BenchError(
                f"cannot load {self.kind} {name!r} (entry point {ep.value!r} of {_dist_name(ep) or 'an unknown distribution'}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return self._table.get(name)

    def _check_base(self, name: str, cls: Any) -> None:
        if self._base is None:
            return
        module, _, attr = self._base.partition(":")
        base = getattr(importlib.import_module(module), attr)
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            what = f"{cls.__module__}.{cls.__qualname__}" if inspect.isclass(cls) else repr(cls)
            raise TypeError(f"{self.kind} {name!r}: {what} is not a {module}.{attr} subclass")

    def register(self, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            if name in self._table:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by "
                    f"{self._table[name].__module__}.{self._table[name].__qualname__}"
                )
            self._check_base(name, cls)
            cls.registered_name = name  # type: ignore[attr-defined]  # every plugin class carries its name
            self._table[name] = cls
            return cls

        return decorator

    def variant(
        self,
        name: str,
        base: type,
        *,
        preset: dict[str, Any],
        doc: str,
        class_name: str,
        attr: str = "preset",
        known: set[str] | None = None,
    ) -> type:
        """Register ``name`` as ``base`` with other defaults: a variant is data (a row of a table
        of presets), not a hand-written subclass. ``class_name`` names the Python class (plain
        pickle finds it as ``module.class_name``); identities and fit keys name ``name``, so
        moving a variant between a class and a table, or its module, never changes a key."""
        # ``attr``: where the class keeps its defaults (a classifier's are its training recipe's,
        # ``recipe_preset``, checked against ``known``).
        unknown = sorted(set(preset) - (known if known is not None else set(hyperparameters(base))))
        if unknown:
            raise ValueError(f"{self.kind} variant {name!r} sets unknown parameter(s) {', '.join(unknown)}")
        cls = type(
            class_name,
            (base,),
            {
                attr: {**getattr(base, attr, {}), **preset},
                "__doc__": doc,
                "__module__": base.__module__,
                "__qualname__": class_name,
            },
        )
        # Reachable as module.class_name, as a hand-written class would be (plain pickle finds it).
        setattr(sys.modules[base.__module__], class_name, cls)
        return self.register(name)(cls)

    def suite(self, name: str, members: tuple[str, ...], doc: str, *, cascade: bool = False) -> None:
        """Register ``name`` as a suite of registered ``members`` (refused when taken). ``cascade``:
        run as AutoAttack's ``run_standard_evaluation`` runs its attacks, each member in order on
        the images every earlier one left robust, each stage a cell of its own (``bench.run.plan``);
        otherwise every member runs on every image."""
        if name in self._table or name in self.suites:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        unknown = [m for m in members if m not in self._table]
        if unknown:
            raise ValueError(f"{self.kind} suite {name!r} names unregistered member(s) {', '.join(unknown)}")
        self.suites[name] = (tuple(members), doc)
        if cascade:
            self._cascades[name] = tuple(members)

    def cascades(self) -> dict[str, tuple[str, ...]]:
        """Every suite registered as a cascade: its name → its members in stage order."""
        self.load()
        return dict(self._cascades)

    def expand(self, names: list[str]) -> list[str]:
        """``names`` with every suite replaced by its members (order kept, duplicates dropped)."""
        self.load()
        out = [m for n in names for m in (self.suites[n][0] if n in self.suites else (n,))]
        return list(dict.fromkeys(out))

    def names(self) -> list[str]:
        """Every name this kind answers to: registered, or declared by an installed package's entry
        point (named from its metadata: nothing is imported for the name)."""
        self.load()
        return sorted({*self._table, *self._plugin_entry_points()})

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._table or name in self._plugin_entry_points()

    def __iter__(self) -> Iterator[tuple[str, type]]:
        """(name, class) of every plugin, installed packages' loaded (``bench list``); one that
        does not load is left out, its error in ``unloadable``."""
        self.load()
        for name in self._plugin_entry_points():
            try:
                self._from_entry_point(name)
            except BenchError as exc:
                self.unloadable[name] = str(exc)
        return iter(sorted(self._table.items()))

    def get(self, name: str) -> type:
        """The class for ``name``: a built-in, an installed package's entry point, or
        ``module:Class`` (an external plugin imported by its path)."""
        self.load()
        if name in self._table:
            return self._table[name]
        if ":" in name:
            return self._external(name)
        found = self._from_entry_point(name)
        if found is not None:
            return found
        if name in self.suites:
            raise BenchError(
                f"{self.kind} {name!r} is a suite of {', '.join(self.suites[name][0])}: "
                "it is expanded into them, not built"
            )
        known = sorted([*self.names(), *self.suites])
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        where = f", or an installed package's entry point in {self.group}" if self.group else ""
        raise BenchError(
            f"unknown {self.kind} {name!r}; {hint}available: {', '.join(known)}"
            f" (or an external plugin as module:ClassName{where})"
        )

    def _external(self, spec: str) -> type:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any import failure is the user's input, not our crash
            raise BenchError(
                f"cannot import {self.kind} plugin module {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        cls = getattr(module, attr, None)
        if not inspect.isclass(cls):
            raise BenchError(f"module {module_name!r} has no class {attr!r} for {self.kind} {spec!r}")
        try:
            self._check_base(spec, cls)
        except TypeError as exc:
            raise BenchError(str(exc)) from None
        # Its own attribute, never one inherited from a registered base class: a subclass of a
        # built-in given by its path is named by that path.
        if not cls.__dict__.get("registered_name"):
            cls.registered_name = spec  # type: ignore[attr-defined]
        return cls


def hyperparameters(cls: type) -> dict[str, Any]:
    """The keyword-only constructor arguments of a plugin class and their defaults."""
    params: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                params[p.name] = p.default
    # A registered variant of a configurable class changes defaults, not the signature.
    params.update(getattr(cls, "preset", {}))
    return params


_WANT = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", tuple: "a list"}


def typed(value: Any, default: Any) -> Any:
    """The one rule for a typed setting: ``value`` must have its default's type (ints may widen to
    floats, lists become the default's sequence type; booleans are never numbers). Returns the
    value as that type; raises ``TypeError`` naming what was expected. A default of None (or no
    default) accepts anything."""
    if default is None or default is inspect.Parameter.empty:
        return value
    expected = type(default)
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected in (tuple, list):
        ok = isinstance(value, (list, tuple))
        value = expected(value) if ok else value
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise TypeError(_WANT.get(expected, expected.__name__))
    return value


def _coerce(kind: str, name: str, key: str, value: Any, default: Any) -> Any:
    try:
        return typed(value, default)
    except TypeError as exc:
        raise BenchError(
            f"invalid parameter {key}={value!r} for {kind} {name!r}: expected {exc} (default {default!r})"
        ) from None


def build(registry: Registry, name: str, overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate plugin ``name`` with validated keyword overrides."""
    cls = registry.get(name)
    known = hyperparameters(cls)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise BenchError(
            f"unknown parameter(s) {', '.join(unknown)} for {registry.kind} {name!r}; "
            f"valid: {', '.join(sorted(known)) or '(none)'}"
        )
    kwargs = {k: _coerce(registry.kind, name, k, v, known[k]) for k, v in overrides.items()}
    try:
        obj = cls(**{**getattr(cls, "preset", {}), **kwargs})
    except (ValueError, TypeError) as exc:
        raise BenchError(f"invalid parameters for {registry.kind} {name!r}: {exc}") from exc
    obj.registered_name = name
    obj.hparams = {**{k: v for k, v in known.items() if v is not inspect.Parameter.empty}, **kwargs}
    return obj


def doc_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "(no description)"


# Its own plugins are its packages' modules; entry points an older install of it declared are not
# another package's.
DISTRIBUTION = "defense-bench"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return _canonical(dist.name) if dist is not None and dist.name else ""


def builtin_modules(package: str) -> list[str]:
    """The modules of one of defense-bench's own plugin packages, by name (``_private`` ones left
    out): its folder in a checkout, the installed package's otherwise. Only these packages are
    read this way; a plugin of anyone else's is declared (an entry point) or named (module:Class)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"the plugin package {package!r} is not importable")
    return sorted(
        f"{package}.{m.name}"
        for m in pkgutil.iter_modules(spec.submodule_search_locations)
        if not m.name.startswith("_")
    )


DATASETS = Registry("dataset", "bench.builtin.data")
CLASSIFIERS = Registry("classifier", "bench.builtin.classifiers")
DEFENSES = Registry("defense", group="defense_bench.defenses", base="defenses.base:Defense", package="defenses")
ATTACKS = Registry("attack", group="defense_bench.attacks", base="attacks.base:AttackPlugin", package="attacks")

register_dataset = DATASETS.register
register_classifier = CLASSIFIERS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
