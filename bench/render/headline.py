"""The headline: each defense's per-sample worst case over every attack and threat model.

Built from the stored ``worst`` rows of threat ``all`` (the driver's per-sample worst over every
attack × threat model of a run), one row per (dataset, classifier, defense, eps), best first,
naming the single attack that did the most damage on its own. Where several runs each hold a
worst-over-all row for one defense (different attack sets, different n: AutoAttack on fewer
images than PGD), they are combined image by image on the images all of them scored (a run of n
images scored the first n of the test split), and the rows with the most images are shown beside
it when that is more: more images under fewer attacks.

Every other stored cell of that leaderboard row counts too, whatever device computed it (an image
is robust only if it survives every attack it met, on any device): a cell no worst row holds (a
budget sweep; AutoAttack's components run on a GPU on more images, with no worst-over-all row of
their own) joins the combination on the images it scored. Cells of a device no worst row came from
are named attack by attack with their device and n, and a component its table's other rows ran
on that device but this row lacks is named as missing (a partial suite says so). Cells alone, with
no worst-over-all row for their defense, make no headline row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.worst import Worst, row_key, row_worst, worst_case
from bench.core.identity import digest, of_record
from bench.core.record import first_images
from bench.core.threats import Threat, order, over_all, threat_name
from bench.render.blocks import fill as fill_block


def _ci(acc: float, lo: Any, hi: Any) -> str:
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi) else f"{acc:.3f}"


def _threats(parts: list[Any]) -> list[str]:
    return sorted({p["threat"] for p in parts}, key=lambda t: (order(t), t))


def _over(parts: list[Any]) -> str:
    """The attacks × threat models behind ``parts`` (where attacks ran under different threat models,
    one product per set of threat models: AutoAttack white-box only beside FGSM and PGD under all
    four is not "6 attacks × 4 threat models"), and the attacks among them that ran at several
    settings (a budget sweep)."""
    settings: dict[str, set[str]] = {}
    under: dict[str, set[str]] = {}
    shared = {t for t in (p["threat"] for p in parts) if Threat.stored(t).same_outputs_as_white}
    for p in parts:
        settings.setdefault(p["attack"], set()).add(digest(of_record(p).get("attack_params")))
        under.setdefault(p["attack"], set()).add(p["threat"])
        # A gradient-free attack's white-box cell is its BPDA and BPDA+EOT cell too (Threat.query):
        # it covers those threat models wherever the others ran under them.
        if p.get("gradient_free") is True and Threat.stored(p["threat"]).is_white and not _stage(p):
            under[p["attack"]] |= shared
    by_threats: dict[tuple[str, ...], list[str]] = {}
    for attack, threats in under.items():
        by_threats.setdefault(tuple(sorted(threats, key=lambda t: (order(t), t))), []).append(attack)
    products = [
        f"{len(attacks)} attack{'s' if len(attacks) > 1 else ''} × {len(ts)} threat model"
        f"{'s' if len(ts) > 1 else ''} ({', '.join(threat_name(t) for t in ts)})"
        for ts, attacks in sorted(by_threats.items(), key=lambda kv: (-len(kv[0]), -len(kv[1]), kv[0]))
    ]
    swept = [f"{a} at {len(s)} settings" for a, s in sorted(settings.items()) if len(s) > 1]
    return " + ".join(products) + (f", {', '.join(swept)}" if swept else "")


def device(rec: Any) -> str:
    """The device a record was computed on, as the headline names it: a GPU by its name, a CPU as
    "CPU" (records of older runs, which name none, ran on CPUs)."""
    if rec.get("device_type") == "cuda":
        for field in ("gpu", "device"):
            if isinstance(rec.get(field), str) and rec.get(field):
                return rec[field]
        return "GPU"
    return "CPU"


def _cells(r: Any) -> list[str]:
    """The cell keys a worst row combines."""
    ident = r.get("identity")
    return list((ident.get("attack_params") or {}).get("cells", [])) if isinstance(ident, dict) else []


def _value(w: Worst | None) -> tuple[float, Any, Any]:
    """A combination's accuracy and Wilson CI."""
    assert w is not None  # every headline record has n and an accuracy
    return w.acc, w.ci_low, w.ci_high


def _on_first(rec: Any, n: int) -> float | None:
    """A record's defended accuracy on its first ``n`` images (None without a stored bitmap)."""
    if int(rec["n"]) == n:
        return float(rec["defended_adv_acc"])
    ok = first_images(rec, n)
    return float(np.mean(ok)) if ok is not None and len(ok) == n else None


def _combo(worst: list[Any], more: list[Any], value: Worst | None, by_key: dict[str, Any]) -> dict[str, Any]:
    """Worst rows and other cells combined on the images ``value`` (their combination) is computed
    on, with what they ran over: ``counted``, the cells of the worst rows' devices (described as
    attacks × threat models), and ``named``, other devices' cells (named attack by attack)."""
    parts = [by_key[k] for r in worst for k in _cells(r) if k in by_key]
    main = {device(r) for r in [*worst, *parts]}
    assert value is not None
    return {
        "n": value.n,
        "value": _value(value),
        "counted": parts + [c for c in more if device(c) in main],
        "named": [c for c in more if device(c) not in main],
    }


def _describe(combo: dict[str, Any], peers: dict[str, set[str]]) -> str:
    """The attacks and threat models behind a combination, per device once several took part; a
    device's named cells list their attacks, their n where it is not the combination's, and the
    attacks the table's other rows ran on that device but this row lacks (a partial suite)."""
    groups: dict[str, tuple[list[Any], list[Any]]] = {}
    for p in combo["counted"]:
        groups.setdefault(device(p), ([], []))[0].append(p)
    for c in combo["named"]:
        groups.setdefault(device(c), ([], []))[1].append(c)
    several = len(groups) > 1
    out = []
    for dev, (counted, named) in sorted(groups.items(), key=lambda kv: (not kv[1][0], kv[0])):
        if counted:
            out.append(_over(counted + named) + (f" on {dev}" if several else ""))
            continue
        attacks = sorted({c["attack"] for c in named})
        sizes = sorted({int(c["n"]) for c in named})
        missing = sorted(peers.get(dev, set()) - set(attacks))
        out.append(
            f"{', '.join(attacks)} · {', '.join(threat_name(t) for t in _threats(named))} on {dev}"
            + (f" (n={'/'.join(map(str, sizes))})" if sizes != [combo["n"]] else "")
            + (f", without {', '.join(missing)}" if missing else "")
        )
    return "; ".join(out) or "—"


def _stage(rec: Any) -> bool:
    """A cascade stage of AutoAttack (``--attack aa``): its identity names the earlier stages."""
    ident = rec.get("identity") if hasattr(rec, "get") else None
    return bool((ident or {}).get("cascade")) if isinstance(ident, dict) else False


def rows(df: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """One table per (dataset, classifier, eps): the headline rows, best worst case first."""
    if df.empty or "threat" not in df.columns:
        return {}
    by_key = {r["cell_key"]: r for _, r in df.iterrows()}
    worst = df[(df["kind"] == "worst") & df["threat"].map(over_all)]
    covered = {k for _, r in worst.iterrows() for k in _cells(r)}
    # Every stored record by the leaderboard row it belongs to (``row_key``): the row's worst case
    # is the page's, from the same function (``row_worst``).
    everything: dict[tuple, list[Any]] = {}
    for _, r in df.iterrows():
        everything.setdefault((r["dataset"], r["classifier"], r["defense"], r["eps"], row_key(r)), []).append(r)
    # Cells no worst-over-all row holds (a budget sweep, a suite run on another device on more
    # images), by the leaderboard row they belong to.
    extra: dict[tuple, list[Any]] = {}
    for _, c in df[(df["kind"] == "cell") & ~df["cell_key"].isin(covered)].iterrows():
        extra.setdefault((c["dataset"], c["classifier"], c["defense"], c["eps"], row_key(c)), []).append(c)
    worst = worst.assign(_same=[row_key(r) for _, r in worst.iterrows()])
    found: dict[tuple, list[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]]] = {}
    for key, g in worst.groupby(["dataset", "classifier", "defense", "eps", "_same"], sort=True):
        ds, clf, defense, eps, _ = key
        recs = [r for _, r in g.sort_values("n", kind="stable").iterrows()]
        more = extra.get(key, [])
        first = _combo(recs, more, row_worst(everything[key]), by_key)  # on the images every record scored
        n = first["n"]
        most = max(int(r["n"]) for r in [*recs, *more])
        big = (
            _combo(
                [r for r in recs if int(r["n"]) == most],
                [c for c in more if int(c["n"]) == most],
                worst_case([r for r in [*recs, *more] if int(r["n"]) == most], most),
                by_key,
            )
            if most > n
            else None
        )
        # The strongest single attack on the images the worst case is computed on: the worst rows'
        # cells of that n, and every other cell on its first n images.
        # A cascade stage's number is robust accuracy after every earlier stage, not one attack's: not
        # a candidate for the strongest *single* attack.
        scored = [
            (p, float(p["defended_adv_acc"]))
            for p in first["counted"]
            if int(p["n"]) == n and p["cell_key"] in covered and not _stage(p)
        ]
        scored += [(c, a) for c in more if not _stage(c) and (a := _on_first(c, n)) is not None]
        strongest = min(scored, key=lambda pa: pa[1], default=None)
        several = len({device(p) for p in [*first["counted"], *first["named"]]}) > 1
        acc, lo, hi = first["value"]
        row = {
            "defense": defense,
            "n": n,
            "clean (defended)": f"{recs[0]['defended_clean_acc']:.3f}",
            "worst case": _ci(acc, lo, hi),
            "_sort": acc,
            "strongest single attack": (
                f"{strongest[0]['attack']} · {threat_name(strongest[0]['threat'])}"
                + (f" on {device(strongest[0])}" if several else "")
                + f" ({strongest[1]:.3f})"
            )
            if strongest is not None
            else "—",
        }
        found.setdefault((ds, clf, eps), []).append((row, first, big))
    out: dict[tuple, list[dict[str, Any]]] = {}
    for key, entries in found.items():
        # The attacks each named device ran for any row of this table: a row lacking one says so.
        peers: dict[str, set[str]] = {}
        for _, *combos in entries:
            for c in (c for combo in combos if combo for c in combo["named"]):
                peers.setdefault(device(c), set()).add(c["attack"])
        for row, first, big in entries:
            row["over"] = _describe(first, peers)
            if big is not None:
                row["on more images"] = f"{_ci(*big['value'])} (n={big['n']}, {_describe(big, peers)})"
            out.setdefault(key, []).append(row)
    return {
        k: pd.DataFrame(v).sort_values(["_sort", "defense"], ascending=[False, True]).drop(columns="_sort").fillna("—")
        for k, v in out.items()
    }


def update(readme: Path, dirs: list[str], df: pd.DataFrame, block: str = "headline") -> Path:
    """Fill ``<!-- headline:start -->`` … ``<!-- headline:end -->`` of ``readme``."""
    parts = [
        "",
        f"_Generated by `python -m bench report --readme {readme.as_posix()} --headline "
        f"{','.join(dirs)}` from their `runs/*/records.jsonl`; do not edit by hand._",
        "",
    ]
    tables = rows(df)
    if not tables:
        parts += ["_(no worst-over-all-threat-models rows stored yet)_", ""]
    for (ds, clf, eps), t in tables.items():
        parts += [
            f"**{ds} · {clf} · L∞ ε = {eps:g}** — defended accuracy, robust only where every attack "
            "under every threat model fails, image by image",
            "",
            t.to_markdown(index=False, disable_numparse=True),
            "",
        ]
    return fill_block(readme, block, parts)
