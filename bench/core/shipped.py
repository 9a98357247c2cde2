"""The reference weights zoo: trained classifiers and defenses that ship in the repository.

Every reference table is computed from these files, so that a fresh clone reproduces it
without training anything (RobustBench's zoo downloads from cloud drives and breaks when a
link does; this one cannot). Each model is two files in ``bench/zoo/``:

    <kind>-<dataset>-<name>.pt    the weights inference needs (a counterGAN ships its generator,
                                  not its discriminator), a weights-only state dict
    <kind>-<dataset>-<name>.json  provenance: the identity the weights were trained under and its
                                  key, sha256 of the file, hash of the tensors, the exact command,
                                  the clean git commit, seconds, device, CPU model, threads, data

A shipped file is used only when its identity equals the one this run computes (same recipe or
hyperparameters, same data fingerprint, same classifier weights, same training-code version)
and its sha256 checks; otherwise one line says why and the model is trained on demand.
``--retrain`` always trains. ``python -m bench weights`` (``make weights``) retrains the zoo's
classifiers and defenses (bench/zoo/zoo.toml); DefenseGAN's generator (kind ``generator``) is
trained and shipped by ``python -m tools.defensegan_curve``.
A provenance file written in an older layout is read in today's (``identity.upgraded``: same key);
``python -m bench weights --upgrade`` rewrites such files in place and trains nothing
(``bench.run.weights.upgrade``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import identity

ZOO_DIR = Path(__file__).resolve().parents[1] / "zoo"
KINDS = ("classifier", "defense", "generator")  # a generator: DefenseGAN's (identity.component_identity)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stem(kind: str, dataset: str, name: str) -> str:
    return f"{kind}-{dataset}-{name}"


@dataclass
class Shipped:
    path: Path  # the weights file
    provenance: dict[str, Any]

    @property
    def sha256(self) -> str:
        return self.provenance["sha256"]

    def source(self) -> str:
        """What records say about where the weights came from."""
        return f"shipped:{self.sha256}"


def differences(a: dict[str, Any], b: dict[str, Any], limit: int = 3) -> str:
    """The first fields two identities differ in, as ``field: shipped → this run`` (as their keys
    see them: a plugin named by its registered name is the same as its legacy spelling)."""
    fa, fb = identity.flatten(identity.hashed(a)), identity.flatten(identity.hashed(b))
    diff = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    text = "; ".join(f"{k}: {fa.get(k)!r} → {fb.get(k)!r}" for k in diff[:limit])
    return text + (f" (+{len(diff) - limit} more)" if len(diff) > limit else "")


def find(
    kind: str, dataset: str, name: str, ident: dict[str, Any], zoo_dir: Path | None = None, announce: bool = True
) -> Shipped | None:
    """The shipped model for (kind, dataset, name) when it was trained under exactly ``ident``
    and its file's sha256 is the one its provenance names; None otherwise (with one line saying
    why when a file was shipped for that name but does not fit)."""
    folder = Path(zoo_dir or ZOO_DIR)
    meta_path = folder / f"{stem(kind, dataset, name)}.json"
    if not meta_path.is_file():
        return None
    why = None
    try:
        meta = read(meta_path)
        weights = folder / meta["file"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        meta, weights, why = {}, meta_path, f"its provenance {meta_path.name} is unreadable ({exc})"
    if why is None and meta.get("key") != identity.key(ident):
        why = f"it was trained under another identity ({differences(meta.get('identity', {}), ident)})"
    elif why is None and not weights.is_file():
        why = f"{weights} is missing"
    elif why is None and (digest := sha256_file(weights)) != meta.get("sha256"):
        why = f"{weights.name} has sha256 {digest[:12]}…, its provenance says {str(meta.get('sha256'))[:12]}…"
    if why:
        if announce:
            print(f"[{kind}] not using the shipped {name} weights for {dataset}: {why}; training on demand", flush=True)
        return None
    return Shipped(weights, meta)


def entry(kind: str, dataset: str, name: str, zoo_dir: Path | None = None) -> dict[str, Any] | None:
    """The provenance of the model shipped for (kind, dataset, name), unchecked; None if none is."""
    path = Path(zoo_dir or ZOO_DIR) / f"{stem(kind, dataset, name)}.json"
    return read(path) if path.is_file() else None


def read(meta_path: Path) -> dict[str, Any]:
    """A provenance file, its identity in today's layout (a plugin named by its registered name)."""
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path.name} is not a JSON object")
    if isinstance(meta.get("identity"), dict):
        meta["identity"] = identity.upgraded(meta["identity"])
    return meta


def text(meta: dict[str, Any]) -> str:
    """A provenance file's text (one layout for every writer)."""
    return json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"


def entries(zoo_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every shipped model's provenance, sorted by file name."""
    folder = Path(zoo_dir or ZOO_DIR)
    return [read(p) for p in sorted(folder.glob("*.json"))]
