"""Weights & Biases logging: effective config, one table row per record, the report's plots.

Offline runs are written under ``<results-dir>/wandb/`` for a later ``wandb sync``. The ``wandb``
package itself is imported only when ``--wandb`` is ``offline`` or ``online`` (it is slow to import).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from bench.core.record import rows


def flat(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        for k, v in record.items()
        if k != "correct"
    }


def log_run(
    mode: str,
    project: str,
    config: dict[str, Any],
    records: Sequence[Mapping[str, Any]],
    images: list[Path],
    results_dir: Path,
) -> str | None:
    if mode == "disabled":
        return None
    import pandas as pd
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    folder = Path(results_dir) / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    # Bounded start-up: an offline or unreachable service must not hang the run (wandb#2701).
    run = wandb.init(
        project=project,
        mode=cast(Literal["disabled", "offline", "online"], mode),  # the config checked it (WANDB_MODES)
        dir=str(Path(results_dir).resolve()),
        config=config,
        settings=wandb.Settings(init_timeout=120, console="off"),
    )
    frame = pd.DataFrame([flat(r) for r in rows(records)])
    payload: dict[str, Any] = {"records": wandb.Table(dataframe=frame.astype(str) if frame.empty else frame)}
    for path in images:
        payload[f"plots/{Path(path).stem}"] = wandb.Image(str(path))
    run.log(payload)
    run_dir = run.dir
    run.finish()
    return run_dir
