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

IDENTITY_VERSION = 2  # bump when the meaning of a field changes: old keys then never match


def digest(obj: Any, n: int = 16) -> str:
    """A short, stable hash of a JSON-able object (dict key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def classifier_identity(dataset: str, arch: str, recipe: dict[str, Any], data_fingerprint: str,
                        seed: int) -> dict[str, Any]:
    """What determines a classifier trained on demand (its cache key)."""
    return {"kind": "classifier", "v": IDENTITY_VERSION, "dataset": dataset, "arch": arch,
            "recipe": recipe, "data": data_fingerprint, "seed": seed}


def fit_identity(plugin: str, fit_params: dict[str, Any], classifier_hash: str, data_fingerprint: str,
                 seed: int) -> dict[str, Any]:
    """What determines a trained defense's weights (its cache key): its class, the
    hyperparameters that change training (including its training attack, that attack's
    parameters and eps), the classifier it was trained against, the data and the seed."""
    return {"kind": "defense-fit", "v": IDENTITY_VERSION, "plugin": plugin, "params": fit_params,
            "classifier": classifier_hash, "data": data_fingerprint, "seed": seed}


def cell_identity(*, data: dict[str, Any], n: int, classifier: str, classifier_hash: str,
                  defense: str, defense_params: dict[str, Any], defense_fit: str | None,
                  attack: str, attack_params: dict[str, Any], eps: float | None, norm: str,
                  attack_labels: str, threat: str, eot_samples: int | None, seed: int,
                  batch_size: int, device_type: str) -> dict[str, Any]:
    """Everything that can change one of a cell's numbers. ``data`` holds the dataset name,
    both split sources and the fingerprint; ``defense_fit`` is the fit key of a trained
    defense (None otherwise); ``eot_samples`` is the number of draws really used (None when
    the threat does not draw)."""
    return {"kind": "cell", "v": IDENTITY_VERSION, "data": data, "n": n,
            "classifier": classifier, "classifier_hash": classifier_hash,
            "defense": defense, "defense_params": defense_params, "defense_fit": defense_fit,
            "attack": attack, "attack_params": attack_params, "eps": eps, "norm": norm,
            "attack_labels": attack_labels, "threat": threat, "eot_samples": eot_samples,
            "seed": seed, "batch_size": batch_size, "device_type": device_type}


def canonical(value: Any) -> str:
    """A value as stable JSON text, numpy scalars (as pandas rows hold them) and NaN normalised."""
    if hasattr(value, "item") and not isinstance(value, (dict, list, str)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        value = None
    return json.dumps(value, sort_keys=True, default=str)


def key(identity: dict[str, Any]) -> str:
    return digest(identity)


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
