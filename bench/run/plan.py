"""Planning the grid: which cells exist and what each one *is* (its identity and key).

A cell is one (dataset, classifier, defense, attack, eps, threat, labels) combination; cells
that share adversarial examples form a group (gray-box cells share them across defenses).
Identities come from ``bench.core.identity``; nothing here runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attacks.base import AttackPlugin
from attacks.generic import TorchattacksAttack
from bench.core import identity
from bench.core.checkpoint import state_hash
from bench.core.errors import BenchError
from bench.core.registry import ATTACKS, DEFENSES, build, hyperparameters
from bench.core.threats import Threat
from defenses.base import Defense


def make_attack(name: str, params: dict[str, Any] | None) -> AttackPlugin:
    if name.startswith("torchattacks:"):
        return TorchattacksAttack(name.split(":", 1)[1], params)
    attack = build(ATTACKS, name, params)
    if not isinstance(attack, AttackPlugin):
        raise BenchError(f"attack {name!r} is not an attacks.base.AttackPlugin subclass")
    return attack


def make_defense(name: str, params: dict[str, Any] | None) -> Defense:
    """Build a defense; a config table with ``plugin = "<name>"`` defines a named variant."""
    params = dict(params or {})
    plugin = params.pop("plugin", name)
    if not isinstance(plugin, str):
        raise BenchError(f"[defenses.{name}] plugin must be a defense name, not {plugin!r}")
    defense = build(DEFENSES, plugin, params)
    if plugin != name:
        defense.hparams = {"plugin": plugin, **defense.hparams}
        defense.registered_name = name
    if not isinstance(defense, Defense):
        raise BenchError(f"defense {name!r} is not a defenses.base.Defense subclass")
    return defense


def object_params(d: Defense) -> dict[str, Any]:
    """The hyperparameters of a defense object built by hand: its class's keyword arguments, read
    back from the attributes it keeps them in, plus a hash of its tensors (weights, buffers) so two
    objects that differ anywhere are two cells."""
    out = {
        k: getattr(d, k)
        for k in hyperparameters(type(d))
        if hasattr(d, k) and isinstance(getattr(d, k), (bool, int, float, str, type(None)))
    }
    if any(True for _ in d.state_dict()):
        out["state"] = state_hash(d)
    return out


def plugin_name(cls: type) -> str:
    """What identifies a plugin class: the name it is registered under (a built-in's, an entry
    point's), never the module it lies in; a class given as ``module:Class`` has no other name."""
    return cls.__dict__.get("registered_name") or f"{cls.__module__}:{cls.__qualname__}"


def fit_ident(d: Defense, classifier_hash: str, data_fingerprint: str, seed: int) -> dict[str, Any] | None:
    """What determines a trained defense's weights (None for a defense that does not train)."""
    if not d.trainable:
        return None
    fit = {k: v for k, v in d.hparams.items() if d.fit_params is None or k in d.fit_params}
    return identity.fit_identity(plugin_name(type(d)), fit, classifier_hash, data_fingerprint, seed, d.training_version)


def fit_key(d: Defense, classifier_hash: str, data_fingerprint: str, seed: int) -> str | None:
    """The cache key of a trained defense's weights (None for a defense that does not train)."""
    ident = fit_ident(d, classifier_hash, data_fingerprint, seed)
    return None if ident is None else identity.key(ident)


@dataclass(frozen=True)
class Fit:
    """Where a defense's weights came from, kept by the runner beside the plugin (never on it):
    ``facts``, a record's ``fit`` mapping (``defense_source``, ``defense_fit_key``,
    ``defense_weights_hash`` and what training reported). Empty for a defense that does not train."""

    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        return self.facts.get("defense_fit_key")


def weights_hash(name: str, d: Defense, fit: Fit | None) -> str | None:
    """The exact weights a trained defense's cells use (it is fitted or loaded before planning)."""
    if not d.trainable:
        return None
    if fit is None or not fit.facts.get("defense_weights_hash"):
        raise BenchError(
            f"defense {name!r} is planned before it was trained or loaded (its cells must name its weights)"
        )
    return fit.facts["defense_weights_hash"]


@dataclass
class Cell:
    key: str
    identity: dict[str, Any]
    defense: str
    eot_samples: int | None
    threat_effective: Threat
    resubmit: int = 1
    # A cascade stage (a suite registered with ``cascade=True``): the key of the previous stage's cell of this
    # defense, threat, eps and labels; the stage runs only on the images that cell left robust.
    after: str | None = None


@dataclass
class Group:
    """Cells that share adversarial examples: one (attack, eps, threat, labels)."""

    attack: str
    eps: float | None
    threat: Threat
    labels: str
    params: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)
    cascade: tuple[str, ...] = ()  # a cascade stage: the earlier stages' attacks, in order


def eps_values(cfg_eps: list[float] | None, spec: Any, attack: AttackPlugin) -> list[float | None]:
    if not attack.uses_eps:
        return [None]
    out: list[float | None] = [*cfg_eps] if cfg_eps else [spec.default_eps]
    return out


def cascade_stages(names: list[str], attacks: dict[str, AttackPlugin]) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """(cascade suite → its members, the attacks that run only as later cascade stages). A cascade's
    first stage runs on every image, as the attack alone does: it is the attack's own cell, shared
    with the individual mode. A later stage also runs on its own only when the grid asks for it
    (by name or through a suite that is not a cascade, such as ``aa-individual``)."""
    every = ATTACKS.cascades()
    cascades = {s: every[s] for s in names if s in every}
    alone = {m for n in names if n not in every for m in (ATTACKS.suites[n][0] if n in ATTACKS.suites else (n,))}
    later = {m for members in cascades.values() for m in members[1:]} - alone
    return cascades, {a for a in later if a in attacks}


def plan(
    cfg: Any,
    spec: Any,
    data_id: dict[str, Any],
    n: int,
    clf_name: str,
    classifier_hash: str,
    attacks: dict[str, AttackPlugin],
    defenses: dict[str, Defense],
    fits: dict[str, Fit],
    device_type: str,
    surrogates: dict[str, str] | None = None,
) -> list[Group]:
    """Every group of the grid with every cell (stored or not). Single-step attacks come first,
    so iterative ones can be checked against them, and gradient-free ones (Square) first among the
    iterative, so a gradient attack's record can carry the masking check (the report redoes both).
    ``surrogates``: transfer threat → the weights hash of the classifier it crafts on."""
    groups = []
    cascades, later = cascade_stages(list(cfg.attack), attacks)
    # (attack, eps, requested threat, defense) → the cell that answers it: a cascade's next stage
    # starts from it.
    answers: dict[tuple, str] = {}

    def cell(
        attack_name: str,
        attack: AttackPlugin,
        params: dict[str, Any],
        eps: float | None,
        threat: Threat,
        dname: str,
        d: Defense,
        draws: int | None,
        query: Threat,
        cascade: list[dict[str, Any]] | None,
        after: str | None,
    ) -> Cell:
        resubmit = cfg.resubmit if d.randomized else 1  # a deterministic defense answers once
        extra: dict[str, Any] = {"resubmit": resubmit} if resubmit > 1 else {}  # absent at 1: stored keys stay
        if threat.is_transfer:
            assert surrogates is not None, "a transfer threat needs its surrogate's hash"
            extra["surrogate_hash"] = surrogates[threat]
        if cascade is not None:
            extra["cascade"] = cascade  # absent outside a cascade: stored keys stay
        ident = identity.cell_identity(
            data=data_id,
            n=n,
            classifier=clf_name,
            classifier_hash=classifier_hash,
            defense=dname,
            defense_params=d.hparams,
            defense_fit=fits[dname].key if dname in fits else None,
            defense_weights=weights_hash(dname, d, fits.get(dname)),
            attack=attack_name,
            attack_params=params,
            eps=eps,
            norm=attack.norm,
            attack_labels=cfg.attack_labels,
            threat=threat,
            eot_samples=draws,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            device_type=device_type,
            extra=extra,
        )
        return Cell(identity.key(ident), ident, dname, draws, query.effective(d.differentiable), resubmit, after)

    for attack_name in sorted(attacks, key=lambda k: (attacks[k].iterative, not attacks[k].gradient_free)):
        if attack_name in later:
            continue
        attack = attacks[attack_name]
        for eps in eps_values(cfg.eps, spec, attack):
            params = attack.effective_params(eps, spec)
            for threat in dict.fromkeys(t.query(attack.gradient_free) for t in cfg.threat):
                group = Group(attack_name, eps, threat, cfg.attack_labels, params)
                for dname, d in defenses.items():
                    draws = threat.draws(d.randomized, cfg.eot_samples)
                    group.cells.append(
                        cell(attack_name, attack, params, eps, threat, dname, d, draws, threat, None, None)
                    )
                    for t in cfg.threat:
                        if t.query(attack.gradient_free) == threat:
                            answers[(attack_name, eps, t, dname)] = group.cells[-1].key
                groups.append(group)
    # Cascade stages after the first, in stage order (each needs the previous stage's cells). A
    # stage is planned under the cascade's own threat: the images it runs on are what that threat's
    # earlier stages left robust. A gradient-free stage still queries the white-box model under
    # BPDA and BPDA+EOT (Threat.query), one draw at a time; its crafted examples are shared with
    # the white-box cascade's where the images are the same (bench.run.worker).
    planned: set[str] = set()
    for members in cascades.values():
        for i, attack_name in enumerate(members[1:], 1):
            attack = attacks[attack_name]
            for eps in eps_values(cfg.eps, spec, attack):
                params = attack.effective_params(eps, spec)
                before = [{"attack": m, "attack_params": attacks[m].effective_params(eps, spec)} for m in members[:i]]
                for threat in dict.fromkeys(cfg.threat):
                    query = threat.query(attack.gradient_free)
                    group = Group(attack_name, eps, threat, cfg.attack_labels, params, cascade=tuple(members[:i]))
                    for dname, d in defenses.items():
                        draws = query.draws(d.randomized, cfg.eot_samples)
                        after = answers[(members[i - 1], eps, threat, dname)]
                        group.cells.append(
                            cell(attack_name, attack, params, eps, threat, dname, d, draws, query, before, after)
                        )
                        answers[(attack_name, eps, threat, dname)] = group.cells[-1].key
                    group.cells = [c for c in group.cells if c.key not in planned]  # two cascades, one prefix
                    planned.update(c.key for c in group.cells)
                    if group.cells:
                        groups.append(group)
    return groups
