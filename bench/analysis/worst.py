"""The per-sample worst case: one rule, used by the runner's worst rows, the page and the headline.

An image counts as robust only where it is right in every record combined. A record of n images
scored the first n of its test split, so records of different n (AutoAttack on fewer images than
PGD) meet on the first min-n images. Where one record stores no per-image outcomes (records older
than the bitmaps), no per-image combination is possible: the value is then the lowest record's,
and says so (``per_image`` False).

``worst_groups`` says which cells of a run make which worst row (over the attacks of one threat
model, over every attack and threat model, a suite's own row); the runner stores a record for each
from ``worst_case``. ``row_key`` and ``row_worst`` are what README's headline and the leaderboard
page rank a defense by: which stored records are one leaderboard row, and their worst case over
every attack and threat model, on any device, on the images every record scored. All are pure
functions of records: unit-tested without running anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.core import identity
from bench.core.identity import ASPECTS, digest, of_record
from bench.core.labels import missing as _missing
from bench.core.record import checks_of, first_images
from bench.core.stats import wilson
from bench.core.threats import ALL, SAME_OUTPUTS_AS_WHITE, Threat


@dataclass(frozen=True)
class Worst:
    n: int  # the images combined: the first n of the test split
    acc: float  # defended adversarial accuracy of the combination
    ci_low: float
    ci_high: float
    per_image: bool  # False: some record stores no bitmaps; the lowest record's value
    outcomes: dict[str, np.ndarray] | None  # outcome → robust on each image (per_image only)
    records: int  # how many records were combined


def _number(v: Any) -> float:
    """A stored number, NaN where there is none."""
    return float("nan") if _missing(v) else float(v)


def worst_case(
    records: Iterable[Mapping[str, Any]], n: int | None = None, outcomes: tuple[str, ...] = ("defended_adv",)
) -> Worst | None:
    """The per-sample worst case of ``records`` (Records, frame rows, or bare ``{"n", "correct"}``)
    on their first ``n`` images (default: the smallest n among them), for each of ``outcomes``; None
    when there is nothing to combine."""
    recs = [r for r in records if not _missing(r.get("n"))]
    if not recs:
        return None
    n = min(int(r["n"]) for r in recs) if n is None else n
    maps = {o: [first_images(r, n, o) for r in recs] for o in outcomes}
    if all(m is not None for ms in maps.values() for m in ms):
        ok = {o: np.logical_and.reduce([m for m in ms if m is not None]) for o, ms in maps.items()}
        main = ok.get("defended_adv", next(iter(ok.values())))
        k = int(main.sum())
        return Worst(n, k / n, *wilson(k, n), True, ok, len(recs))
    recs = [r for r in recs if not _missing(r.get("defended_adv_acc"))]
    if not recs:
        return None
    same_n = [r for r in recs if int(r["n"]) == n] or recs
    low = min(same_n, key=lambda r: float(r["defended_adv_acc"]))
    lo, hi = (_number(low.get(f"defended_adv_acc_ci_{end}")) for end in ("low", "high"))
    return Worst(n, float(low["defended_adv_acc"]), lo, hi, False, None, len(recs))


def row_key(rec: Mapping[str, Any]) -> str:
    """Which leaderboard row a record belongs to (with its dataset, classifier, defense and eps):
    records combine only where they share test data, classifier weights, defense settings and
    weights (``ASPECTS["row"]``) and norm. Attack labels (true or predicted) are the attacker's
    choice, as the attack is: both count in one worst case."""
    return digest([{k: of_record(rec).get(k) for k in ASPECTS["row"]}, rec.get("norm")])


def _cells_of(rec: Mapping[str, Any]) -> list[str]:
    """The cell keys a stored worst row combines (none for a cell)."""
    ident = rec.get("identity")
    return list((ident.get("attack_params") or {}).get("cells", [])) if isinstance(ident, dict) else []


def row_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """What a row's worst case combines, out of every stored record of it: each cell (any threat
    model, any device, a budget sweep's every setting), and a stored worst row only where some cell
    it combines is not among them, or it names none (its cells came from elsewhere)."""
    recs = list(records)
    cells = [r for r in recs if r.get("kind", "cell") == "cell"]
    have = {r.get("cell_key") for r in cells}
    stand_in = [r for r in recs if r.get("kind") == "worst" and not (_cells_of(r) and set(_cells_of(r)) <= have)]
    return cells + stand_in


def pair_of(rec: Mapping[str, Any]) -> tuple[str, str]:
    """One attack × threat model of a row: its cells (budgets, devices, runs of several sizes) answer it
    together. A stored worst row standing in for cells from elsewhere is a pair of its own: what it
    covers is not known here, so no other run can answer for it."""
    if rec.get("kind") == "worst":
        return "worst", str(rec.get("cell_key"))
    return str(rec.get("attack")), str(rec.get("threat"))


def covered(records: Iterable[Mapping[str, Any]]) -> int | None:
    """The images every attack × threat model of ``records`` scored: each pair's largest run (a
    run of n images scored the first n), the smallest over the pairs."""
    best: dict[tuple[str, str], int] = {}
    for r in records:
        if not _missing(r.get("n")):
            best[pair_of(r)] = max(best.get(pair_of(r), 0), int(r["n"]))
    return min(best.values()) if best else None


def row_worst(records: Iterable[Mapping[str, Any]], n: int | None = None) -> Worst | None:
    """A leaderboard row's worst case (README's headline and the page rank by it): ``records``, the
    row's stored records (``row_key``), combined image by image on the images every attack × threat
    model of the row scored (``covered``), every cell counting on the images it scored, so a run on
    64 images beside the same attack on 500 tightens the first 64 and leaves the rest to the 500
    (default); or on their first ``n``, every record on all of them (``worst_case``). Without
    bitmaps, the lowest record stands (``worst_case``'s rule)."""
    recs = row_records(records)
    cover = covered(recs) if n is None else None
    if cover is None:
        return worst_case(recs, n)
    sized = [(r, int(r["n"])) for r in recs if not _missing(r.get("n"))]
    maps = [first_images(r, min(size, cover)) for r, size in sized]
    if any(m is None for m in maps):
        return worst_case(recs)
    ok = np.ones(cover, bool)
    for m in maps:
        assert m is not None
        ok[: len(m)] &= m
    k = int(ok.sum())
    return Worst(cover, k / cover, *wilson(k, cover), True, {"defended_adv": ok}, len(recs))


def cascade_of(rec: Mapping[str, Any]) -> list[str] | None:
    """The earlier stages of a cascade stage's record (their attack names), None outside a cascade."""
    stages = (rec.get("identity") or {}).get("cascade")
    return None if stages is None else [s["attack"] for s in stages]


WORST = "worst"  # a worst row's attack label; a suite's own row is labelled with the suite's name


@dataclass(frozen=True)
class WorstGroup:
    """One worst row to store: the cells it combines and the fields that tell it apart."""

    label: str  # "worst", or a suite's name (its own row: aa, aa-individual)
    threat: str  # a threat model, or "all"
    defense: str
    eps: float | None
    norm: str | None
    labels: str | None
    records: tuple[Mapping[str, Any], ...]
    identity: dict[str, Any]
    attacks: list[str]  # what the row covers, as its attack_params name it
    mode: dict[str, Any]  # {"mode": "cascade"} for a cascade suite's row

    @property
    def key(self) -> str:
        return identity.key(self.identity)


def worst_groups(
    records: Iterable[Mapping[str, Any]],
    dataset: str,
    threats: list[str],
    suites: Mapping[str, tuple[str, ...]],
    cascades: Iterable[str],
) -> list[WorstGroup]:
    """The worst rows a run's cell ``records`` of ``dataset`` make, robust only where every attack
    fails: over the attacks of one norm within each threat model, and (threat "all") over every
    attack *and* every threat model of the grid (``threats``): an attacker who knows the defense
    may also choose to ignore it (gray-box transfer) or to replace its gradient (BPDA), so a
    defense whose own gradients mislead is judged by whichever attacker does best on each image.
    A suite of the grid (``suites``: name → members) also gets its own row per threat model once
    every member's cell is there: a cascade suite's (``cascades``) from its stages' cells, a suite
    run member by member (``aa-individual``) from the members' own cells."""
    cascades = set(cascades)
    grid_threats = [Threat.parse(t) for t in threats]
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("dataset") != dataset or r.get("kind") != "cell" or not r.get("correct"):
            continue
        cell = (r["defense"], r["eps"], r.get("norm"), r.get("attack_labels"))
        stages = cascade_of(r)
        # A gradient-free attack's white-box cell is its cell under BPDA and BPDA+EOT too
        # (plan: Threat.query): it counts in those threats' rows. A cascade stage's is not: the
        # images it ran on are what that threat's earlier stages left.
        shared = (
            [str(t) for t in grid_threats if t.kind in SAME_OUTPUTS_AS_WHITE]
            if r.get("gradient_free") is True and Threat.parse(r["threat"]).is_white and stages is None
            else []
        )
        for threat in (r["threat"], *shared):
            groups.setdefault((WORST, threat, *cell), []).append(r)
            for s, members in suites.items():
                if r["attack"] in members and (
                    (stages or []) == list(members[: members.index(r["attack"])]) if s in cascades else stages is None
                ):
                    groups.setdefault((s, threat, *cell), []).append(r)
        groups.setdefault((WORST, ALL, *cell), []).append(r)
    out = []
    for (label, threat, defense, eps, norm, labels), recs in sorted(groups.items(), key=str):
        over_all = threat == ALL
        if label != WORST:
            if {r["attack"] for r in recs} != set(suites[label]):
                continue  # a member's cell is missing (another norm, an interrupted run)
        elif len({(r["attack"], r["threat"]) for r in recs}) < 2 or (over_all and len({r["threat"] for r in recs}) < 2):
            continue
        # The row's own threat's cells first: the row's identity starts from one of them.
        recs = sorted(
            recs,
            key=lambda r: (not over_all and r["threat"] != threat, r["attack"], cascade_of(r) is not None, r["threat"]),
        )
        named = [r["attack"] + (" (cascade)" if cascade_of(r) is not None else "") for r in recs]
        attacks = [a if not over_all else f"{a}@{r['threat']}" for a, r in zip(named, recs)]
        cells = {"cells": sorted(r["cell_key"] for r in recs)}
        mode = {"mode": "cascade"} if label in cascades else {}  # told apart from a stored individual `aa`
        # Over threats, what was covered labels the column when rows differ (a per-threat worst
        # row's identity stays as it was, so stored ones keep their keys).
        ident = {
            **recs[0]["identity"],
            "attack": label,
            "threat": threat,
            "attack_params": {"attacks": attacks, **cells} if over_all else {**cells, **mode},
        }
        out.append(WorstGroup(label, threat, defense, eps, norm, labels, tuple(recs), ident, attacks, mode))
    return out


def worst_fields(g: WorstGroup) -> dict[str, Any]:
    """A worst row's record fields but the run's own (dataset, classifier, run id …) and its time."""
    first = g.records[0]
    fields = {
        "cell_key": g.key,
        "identity": g.identity,
        "defense": g.defense,
        "defense_params": first.get("defense_params"),
        "attack": g.label,
        "attack_params": {"attacks": g.attacks, **g.mode},
        "attack_labels": g.labels,
        "eps": g.eps,
        "threat": g.threat,
        "norm": g.norm,
        "device": first.get("device"),
        "device_type": first.get("device_type"),
        "batch_size": first.get("batch_size"),
        "defense_ms_per_sample": first.get("defense_ms_per_sample"),
        "checks": sorted({c for r in g.records for c in checks_of(r)}, key=lambda c: c.message),
    }
    if g.label != WORST and all(r.get("attack_forward_per_sample") is not None for r in g.records):
        # A suite's cost per image: its members' passes added up (a cascade's stages ran on fewer
        # images each, which their per-image counts already say).
        for k in ("attack_forward_per_sample", "attack_backward_per_sample"):
            fields[k] = sum(r[k] for r in g.records)
    return fields
