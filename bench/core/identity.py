"""What a result *is*: the one place that defines and hashes identities.

Every key the harness uses comes from here — the cell key of a stored record, the cache key
of a trained classifier or defense, and the report's row identity — so two numbers share a
key only if nothing that can change them differs.

A cell's identity covers: the data (dataset, both splits' sources, their fingerprint, n),
the classifier (architecture, weights hash), the defense (name, every hyperparameter, and
for a trained defense what it was trained on and against — its fit identity), the attack
(name, effective parameters, eps, norm, which labels it was crafted with), the threat model
(and the EOT draws it really uses), the seed, the batch size (random starts and restarts are
seeded per batch) and the device type.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from bench.core.record import Record

IDENTITY_VERSION = 3  # bump when the meaning of a field changes: old keys then never match
# v3: classifier and fit identities name the version of the code that trains them ("code"), and
# a cell names the exact weights of a trained defense ("defense_weights"), as it does the classifier's.


def digest(obj: Any, n: int = 16) -> str:
    """A short, stable hash of a JSON-able object (dict key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def classifier_identity(
    dataset: str, arch: str, recipe: dict[str, Any], data_fingerprint: str, seed: int, code: int
) -> dict[str, Any]:
    """What determines a classifier trained on demand (its cache key). ``code`` is the version
    of the training code (``bench.builtin.training.TRAINING_VERSION``): weights trained by other code
    never share a key (tests/test_training_code.py forces the bump)."""
    return {
        "kind": "classifier",
        "v": IDENTITY_VERSION,
        "dataset": dataset,
        "arch": arch,
        "recipe": recipe,
        "data": data_fingerprint,
        "seed": seed,
        "code": code,
    }


# Fit identities made before plugins were identified by their registered name (issue 39) named the
# class by its Python path, and every fit key then made (the shipped zoo's, bench/zoo/*.json, and
# every cache's) is a hash over that string. A frozen table, registered name → that string, used
# only when hashing (``hashed``): an identity names the plugin by its registered name, and the keys
# of everything stored before stay what they were. Never add a row: a plugin registered from now on
# is hashed under its name, so moving its file changes nothing.
LEGACY_FIT_PLUGIN: dict[str, str] = {
    "countergan": "defenses.countergan.CounterGANPreset",
    "countergan-adaptive": "defenses.countergan.CounterGANAdaptive",
    "countergan-conv-bce": "defenses.countergan.CounterGANConvBCE",
    "countergan-conv-mse": "defenses.countergan.CounterGANConvMSE",
    "countergan-linear-bce": "defenses.countergan.CounterGANLinearBCE",
    "countergan-linear-mse": "defenses.countergan.CounterGANLinearMSE",
    "countergan-linear-wgangp": "defenses.countergan.CounterGANLinearWGANGP",
    "defensegan": "defenses.defensegan.DefenseGAN",
}


def upgraded(identity: dict[str, Any]) -> dict[str, Any]:
    """A stored identity in today's layout: a fit identity written before issue 39 names a built-in
    plugin by its Python path (``LEGACY_FIT_PLUGIN``'s values), read back under its registered name.
    The key is unchanged (``hashed`` spells it as it was then), so old manifests and caches are
    found and say which plugin they are by name."""
    plugin = identity.get("plugin") if identity.get("kind") == "defense-fit" else None
    name = _LEGACY_NAME.get(plugin) if isinstance(plugin, str) else None
    return identity if name is None else {**identity, "plugin": name}


_LEGACY_NAME = {path: name for name, path in LEGACY_FIT_PLUGIN.items()}


def hashed(identity: dict[str, Any]) -> dict[str, Any]:
    """The form of ``identity`` its key is the hash of: itself, except a fit identity of a plugin
    stored before issue 39, whose ``plugin`` is hashed as it was then spelt (``LEGACY_FIT_PLUGIN``
    for a built-in; ``module.Class`` for an external ``module:Class``)."""
    plugin = identity.get("plugin") if identity.get("kind") == "defense-fit" else None
    if not isinstance(plugin, str):
        return identity
    legacy = LEGACY_FIT_PLUGIN.get(plugin) or (plugin.replace(":", ".", 1) if ":" in plugin else None)
    return identity if legacy is None else {**identity, "plugin": legacy}


def fit_identity(
    plugin: str, fit_params: dict[str, Any], classifier_hash: str, data_fingerprint: str, seed: int, code: int
) -> dict[str, Any]:
    """What determines a trained defense's weights (its cache key): its plugin (the registered
    name of its class, or ``module:Class`` for an external class given so — never where a
    registered class's file lies), the hyperparameters that change training (including its
    training attack, that attack's parameters and eps), the classifier it was trained against, the
    data, the seed and the version of its training code (the class's ``training_version``)."""
    return {
        "kind": "defense-fit",
        "v": IDENTITY_VERSION,
        "plugin": plugin,
        "params": fit_params,
        "classifier": classifier_hash,
        "data": data_fingerprint,
        "seed": seed,
        "code": code,
    }


def component_identity(plugin: str, component: str, settings: dict[str, Any], data_fingerprint: str) -> dict[str, Any]:
    """What determines weights a plugin ships for a part of itself (DefenseGAN's generator, in the
    zoo as ``<component>-<dataset>-<plugin>-<tag>``): the plugin's registered name, the part, the
    settings that would make other weights (architecture, shape, training settings other than its
    budget) and the data it was trained on."""
    return {
        "kind": "component",
        "v": IDENTITY_VERSION,
        "plugin": plugin,
        "component": component,
        "settings": settings,
        "data": data_fingerprint,
    }


def cell_identity(
    *,
    data: dict[str, Any],
    n: int,
    classifier: str,
    classifier_hash: str,
    defense: str,
    defense_params: dict[str, Any],
    defense_fit: str | None,
    defense_weights: str | None,
    attack: str,
    attack_params: dict[str, Any],
    eps: float | None,
    norm: str,
    attack_labels: str,
    threat: str,
    eot_samples: int | None,
    seed: int,
    batch_size: int,
    device_type: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that can change one of a cell's numbers. ``data`` holds the dataset name,
    both split sources and the fingerprint; ``defense_fit`` is the fit key of a trained
    defense (None otherwise); ``eot_samples`` is the number of draws really used (None when
    the threat does not draw); ``defense_weights`` the hash of the weights it really used (two
    trainings under one fit key on different machines can differ). ``extra``: fields only some
    cells have (``resubmit`` > 1, a transfer threat's ``surrogate_hash``, a cascade stage's
    ``cascade``: its earlier stages, each ``{"attack", "attack_params"}``, in order), absent
    otherwise, so the keys of cells without them stay as they were."""
    return {
        "kind": "cell",
        "v": IDENTITY_VERSION,
        "data": data,
        "n": n,
        "classifier": classifier,
        "classifier_hash": classifier_hash,
        "defense": defense,
        "defense_params": defense_params,
        "defense_fit": defense_fit,
        "defense_weights": defense_weights,
        "attack": attack,
        "attack_params": attack_params,
        "eps": eps,
        "norm": norm,
        "attack_labels": attack_labels,
        "threat": threat,
        "eot_samples": eot_samples,
        "seed": seed,
        "batch_size": batch_size,
        "device_type": device_type,
        **(extra or {}),
    }


def canonical(value: Any) -> str:
    """A value as stable JSON text, numpy scalars (as pandas rows hold them) and NaN normalised."""
    if hasattr(value, "item") and not isinstance(value, (dict, list, str)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        value = None
    return json.dumps(value, sort_keys=True, default=str)


def key(identity: dict[str, Any]) -> str:
    return digest(hashed(identity))


def flatten(identity: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: so the report can name the fields two rows differ in."""
    out: dict[str, Any] = {}
    for k, v in identity.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, tuple)) else v
    return out


# ---- grouping records by identity ----------------------------------------------------------
# What "the same cell except X" means, said once: each aspect names the identity fields (dotted
# for nested ones) that X covers. Readers group with ``group_key(record, vary=(...))`` and label
# with ``aspect_of``; nobody else lists identity fields.
ASPECTS: dict[str, tuple[str, ...]] = {
    "meta": ("kind", "v"),
    "defense": ("defense", "defense_params", "defense_fit", "defense_weights", "eot_samples", "resubmit"),
    "attack": ("attack", "attack_params"),
    # A cascade stage's earlier stages (``cascade``) are part of its attack setting, not of its row;
    # they are not part of "attack": a stage's FGSM twin and gradient-free witness are cells of the
    # same cascade position only (a later stage's numbers are robust-after-every-earlier-stage).
    "attack_setting": ("attack", "attack_params", "eps", "norm", "cascade"),
    "budget": ("attack_params.steps", "attack_params.alpha", "attack_params.restarts", "eot_samples"),
    "n": ("n",),
    "classifier": ("classifier", "classifier_hash"),
    "data": ("data",),
    # What the attack queried through: a gradient-free attack's white-box cell is also its BPDA and
    # BPDA+EOT cell (bench.core.threats.Threat.query).
    "query": ("threat", "eot_samples"),
    # What tells two leaderboard rows of one defense apart (not its EOT draws: a row's threat
    # columns have their own).
    "row": ("defense_params", "defense_fit", "defense_weights", "classifier_hash", "data"),
}
# A record written without a stored identity (older runs, hand-made test records): the identity
# fields its flat fields stand for (record field → identity field).
LEGACY = {
    "dataset": "data.dataset",
    "data_fingerprint": "data.fingerprint",
    "test_source": "data.test_source",
    "n": "n",
    "classifier": "classifier",
    "classifier_hash": "classifier_hash",
    "defense": "defense",
    "defense_params": "defense_params",
    "defense_fit_key": "defense_fit",
    "defense_weights_hash": "defense_weights",
    "attack": "attack",
    "attack_params": "attack_params",
    "eps": "eps",
    "norm": "norm",
    "attack_labels": "attack_labels",
    "threat": "threat",
    "eot_samples": "eot_samples",
    "seed": "seed",
    "generator_iterations": "generator_iterations",
}


def _value(v: Any) -> Any:
    """A record value as identity JSON would hold it (numpy scalars, NaN → None)."""
    if hasattr(v, "item") and not isinstance(v, (dict, list, str)):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def of_record(rec: Any) -> dict[str, Any]:
    """A record's identity: the stored one, else the one its flat fields stand for (a dict or a
    pandas row; absent and NaN fields are left out)."""
    if isinstance(rec, Record):
        rec = rec.row()  # a legacy record's fit facts (defense_fit_key …) stand for parts of it
    ident = rec.get("identity")
    if isinstance(ident, dict):
        return ident
    out: dict[str, Any] = {}
    for field, path in LEGACY.items():
        v = _value(rec.get(field))
        if v is None:
            continue
        head, _, tail = path.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = v
        else:
            out[head] = v
    return out


def _drop(ident: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    out = dict(ident)
    for path in paths:
        head, _, tail = path.partition(".")
        if not tail:
            out.pop(head, None)
        elif isinstance(out.get(head), dict):
            out[head] = {k: v for k, v in out[head].items() if k != tail}
    return out


def group_key(rec: Any, vary: tuple[str, ...] = ()) -> str:
    """A key shared by exactly the records whose identities agree on everything but the
    ``vary`` aspects (``ASPECTS``): e.g. ``vary=("defense",)`` groups the defenses of one
    attacked test set, ``vary=("attack",)`` finds a cell's twin under another attack."""
    paths = tuple(p for a in vary for p in ASPECTS[a])
    return canonical(_drop(of_record(rec), paths))


def aspect_of(path: str, aspect: str) -> bool:
    """Whether a flattened identity field (``a.b``) belongs to an aspect."""
    return any(path == p or path.startswith(p + ".") for p in ASPECTS[aspect])
