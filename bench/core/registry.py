"""Plugin registries: one per kind, duplicates refused, unknown names explained.

A plugin is a class registered under the string users type on the command line::

    @register_defense("countergan")
    class CounterGAN(Defense): ...

External plugins are named explicitly as ``package.module:ClassName``; nothing is
discovered by scanning.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

from bench.core.errors import BenchError


class Registry:
    """A name → class table for one plugin kind (``"defense"``, ``"attack"`` …)."""

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._table: dict[str, type] = {}
        # The module that registers the built-in plugins of this kind, imported on first lookup:
        # a named module (explicit discovery, no scanning), so a lookup never depends on what
        # the caller happened to import first.
        self._builtins = builtins
        # name → (member names, description): a suite runs its members as cells of their own and
        # is combined per sample into one row named after it (AutoAttack's ``aa``).
        self.suites: dict[str, tuple[tuple[str, ...], str]] = {}

    def _load(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            if name in self._table:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by "
                    f"{self._table[name].__module__}.{self._table[name].__qualname__}"
                )
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
        of presets), not a hand-written subclass. ``class_name`` names it in identities and fit
        keys (``module.class_name``): the name its keys were made under stays its name, so
        moving a variant between a class and a table never changes a cache key or a shipped file."""
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

    def suite(self, name: str, members: tuple[str, ...], doc: str) -> None:
        """Register ``name`` as a suite of registered ``members`` (refused when taken)."""
        if name in self._table or name in self.suites:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        unknown = [m for m in members if m not in self._table]
        if unknown:
            raise ValueError(f"{self.kind} suite {name!r} names unregistered member(s) {', '.join(unknown)}")
        self.suites[name] = (tuple(members), doc)

    def expand(self, names: list[str]) -> list[str]:
        """``names`` with every suite replaced by its members (order kept, duplicates dropped)."""
        self._load()
        out = [m for n in names for m in (self.suites[n][0] if n in self.suites else (n,))]
        return list(dict.fromkeys(out))

    def names(self) -> list[str]:
        self._load()
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._table

    def __iter__(self) -> Iterator[tuple[str, type]]:
        self._load()
        return iter(sorted(self._table.items()))

    def get(self, name: str) -> type:
        """The class for ``name``; ``module:Class`` imports an external plugin."""
        self._load()
        if name in self._table:
            return self._table[name]
        if ":" in name:
            return self._external(name)
        if name in self.suites:
            raise BenchError(
                f"{self.kind} {name!r} is a suite of {', '.join(self.suites[name][0])}: "
                "it is expanded into them, not built"
            )
        known = sorted([*self.names(), *self.suites])
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise BenchError(
            f"unknown {self.kind} {name!r}; {hint}available: {', '.join(known)}"
            f" (or an external plugin as module:ClassName)"
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
        if not getattr(cls, "registered_name", None):
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


DATASETS = Registry("dataset", "bench.builtin.data")
CLASSIFIERS = Registry("classifier", "bench.builtin.classifiers")
DEFENSES = Registry("defense", "defenses")
ATTACKS = Registry("attack", "attacks")

register_dataset = DATASETS.register
register_classifier = CLASSIFIERS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
