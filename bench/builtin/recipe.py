"""A classifier's training recipe: the ``Recipe`` fields, their validation (one path for the
``[classifier]`` table, a class's ``recipe_preset`` and ``[classifiers.<name>]``), the part of it a
cache key names, and the one line printed before training."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from bench.core.errors import BenchError
from bench.core.registry import CLASSIFIERS, typed


@dataclass
class Recipe:
    """How a classifier is trained when no weights are given.

    Precedence (``resolve_recipe``): these defaults < ``[classifier]`` in bench.toml < the
    class's ``recipe_preset`` < ``[classifiers.<name>]``. The ``adv_*`` fields switch on Madry
    et al.'s PGD adversarial training; at their defaults (``adv_eps = 0``) training is standard.
    """

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    adv_eps: float = 0.0  # L∞ radius trained against; 0 = standard training
    adv_steps: int = 0  # PGD steps per batch (random start), needed when adv_eps > 0
    adv_alpha: float = 2.5  # PGD step size in units of eps/steps (Madry et al.'s 2.5·eps/steps)
    adv_ramp_epochs: float = 0.0  # eps grows linearly from 0 to adv_eps over this many epochs
    adv_clean_fraction: float = 0.0  # share of each batch left clean (0 = Madry: all adversarial)
    rec_L: int = 0  # > 0: train on DefenseGAN reconstructions G(z*) of the training
    rec_R: int = 1  # images, rec_L descent steps, rec_R restarts (the paper's "Rec")


def recipe_identity(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields of a classifier's cache key: the rec_* fields only when used, so that
    classifiers cached before they existed keep their keys."""
    return {k: v for k, v in recipe.items() if recipe.get("rec_L", 0) > 0 or not k.startswith("rec_")}


def describe(recipe: Recipe, n: int) -> str:
    """One line: what a recipe will do on ``n`` training images (printed before training)."""
    iters = recipe.epochs * math.ceil(n / recipe.batch_size)
    text = f"{recipe.epochs} epochs, {iters} iterations of batch {recipe.batch_size}"
    if recipe.adv_eps > 0:
        text += (
            f", PGD-{recipe.adv_steps} adversarial training at eps {recipe.adv_eps:g}"
            + (f" (ramped over {recipe.adv_ramp_epochs:g} epochs)" if recipe.adv_ramp_epochs else "")
            + (f", {recipe.adv_clean_fraction:.0%} clean" if recipe.adv_clean_fraction else "")
            + f": ~{recipe.adv_steps + 1}× the cost of standard training"
        )
    if recipe.rec_L > 0:
        text += f", on DefenseGAN reconstructions (L = {recipe.rec_L}, R = {recipe.rec_R}) of the training images"
    return text


def _typed(table: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check one table's keys and value types against ``Recipe`` (ints may widen to floats)."""
    defaults = {f.name: f.default for f in fields(Recipe)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise BenchError(f"unknown key(s) {', '.join(unknown)} in {table}; valid: {', '.join(defaults)}")
    out = {}
    for k, v in values.items():
        try:
            out[k] = typed(v, defaults[k])  # the registry's rule for every typed setting
        except TypeError as exc:
            raise BenchError(f"{table} {k} must be {exc}, got {v!r}") from None
    return out


def _checked(r: Recipe, table: str) -> Recipe:
    """Ranges, and the adversarial fields' consistency."""
    bad = [(k, "a positive") for k in ("epochs", "batch_size", "lr") if getattr(r, k) <= 0]
    bad += [(k, "a non-negative") for k in ("weight_decay", "adv_steps", "adv_ramp_epochs") if getattr(r, k) < 0]
    bad += [(k, "a non-negative") for k in ("rec_L",) if r.rec_L < 0]
    bad += [(k, "a positive") for k in ("adv_alpha", "rec_R") if getattr(r, k) <= 0]
    if bad:
        k, what = bad[0]
        raise BenchError(f"{table} {k} must be {what} number, got {getattr(r, k)!r}")
    if not 0 <= r.adv_eps <= 1:
        raise BenchError(f"{table} adv_eps must be in [0, 1] (0 = standard training), got {r.adv_eps!r}")
    if not 0 <= r.adv_clean_fraction < 1:
        raise BenchError(f"{table} adv_clean_fraction must be in [0, 1), got {r.adv_clean_fraction!r}")
    if r.adv_eps > 0 and r.adv_steps == 0:
        raise BenchError(f"{table} adv_eps = {r.adv_eps:g} needs adv_steps ≥ 1 (PGD steps per batch)")
    return r


def check_recipe(values: dict, table: str = "[classifier]") -> Recipe:
    """A validated ``Recipe`` from one table of overrides (unknown keys, wrong types → BenchError)."""
    return _checked(Recipe(**_typed(table, values)), table)


def resolve_recipe(name: str, general: dict, specific: dict) -> Recipe:
    """The effective recipe of classifier ``name``: Recipe defaults < ``general`` (``[classifier]``)
    < the class's ``recipe_preset`` < ``specific`` (``[classifiers.<name>]``), each table validated."""
    preset = getattr(CLASSIFIERS.get(name), "recipe_preset", {})
    values = {
        **_typed("[classifier]", general),
        **_typed(f"{name} recipe_preset", preset),
        **_typed(f"[classifiers.{name}]", specific),
    }
    return _checked(Recipe(**values), f"recipe of classifier {name!r} ([classifier], [classifiers.{name}]):")
