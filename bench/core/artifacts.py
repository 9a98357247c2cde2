"""The one load-or-train ladder for every trained artifact: a classifier (the target or a transfer
surrogate) and a trained defense alike.

In order: the shipped zoo (``bench/zoo``: exactly this identity, sha256 checked); a plugin's own
shipped weights (DefenseGAN's generator); the cache (``<cache>/<kind>s/…-<key>.pt``); training,
whose result is cached. ``retrain`` skips the zoo and the cache. What a record says of where the
weights came from (``source``: shipped:<sha256> | cache:<path> | trained:<path> | the plugin's own)
is returned with the facts training reported, for the record's ``fit`` mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from bench.core import shipped
from bench.core.checkpoint import load_state, save_state


def load_or_train(
    kind: str,
    dataset: str,
    name: str,
    ident: dict[str, Any],
    key: str,
    module: nn.Module,
    cache_path: Path,
    train: Callable[[], dict[str, Any]],
    *,
    retrain: bool = False,
    pretrained: Callable[[], dict[str, Any] | None] | None = None,
    ignore: tuple[str, ...] = (),
    zoo_dir: Path | None = None,
) -> tuple[str, dict[str, Any]]:
    """Fill ``module`` with the weights of ``ident`` (``key`` = its key): (how: "shipped", "pretrained",
    "cache" or "trained"; the facts for records, starting with ``<kind>_source``). ``train`` trains
    ``module`` in place and returns its facts (seconds …); they are saved beside the cached file."""
    ship = None if retrain else shipped.find(kind, dataset, name, ident, zoo_dir)
    if ship is not None:
        load_state(module, ship.path, what=f"shipped {name} {kind}", ignore=ignore)
        print(f"[{kind}] {name}: shipped weights {ship.path.name} (sha256 {ship.sha256[:12]}…)", flush=True)
        return "shipped", {f"{kind}_source": ship.source()}
    if pretrained is not None and (pre := pretrained()) is not None:
        return "pretrained", pre
    if cache_path.is_file() and not retrain:
        load_state(module, cache_path, what=f"cached {name} {kind}")
        return "cache", {f"{kind}_source": f"cache:{cache_path}"}
    facts = train()
    save_state(module, cache_path, {kind: name, "identity": ident, **facts})
    return "trained", {f"{kind}_source": f"trained:{cache_path}", **facts}
