"""Display rules shared by every table, plot and page: one helper per rule.

They live in core because analysis keys some groupings by the same strings the tables show
(an eps label), and one rule must not exist twice with different results.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bench.core.identity import digest


def missing(v: Any) -> bool:
    """None or NaN (a pandas frame's empty cell)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_eps(e: Any) -> str:
    """An L∞ budget as tables show it (4 significant digits; "—" for an unbounded attack)."""
    return "—" if missing(e) else f"{float(e):.4g}"


def short(value: Any, width: int = 14) -> str:
    """A value cut to ``width`` characters for a label; a cut label keeps a hash of the whole
    value, so two different values never look alike (and never merge into one table row)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[:8] + "…" + digest(text, 6)


def defense_label(row: Any, width: int = 0) -> str:
    """A defense with the variant label its report row has, if any: ``name [variant]``; the
    variant is cut to ``width`` characters when given (plots' legends)."""
    variant = row.get("variant") or ""
    if not isinstance(variant, str):
        variant = ""
    if width and len(variant) > width:
        variant = variant[: width - 1] + "…"
    return f"{row['defense']} [{variant}]" if variant else str(row["defense"])
