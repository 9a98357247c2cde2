"""defense-bench: compare adversarial defenses for image classifiers side by side.

``bench.evaluate(...)`` (``bench.api``) runs a grid from Python; ``python -m bench`` from the
command line. Layers: ``core`` → ``builtin``, ``store`` → ``analysis`` → ``render``; ``run``;
``api``; ``cli`` (docs/guides/architecture.md; enforced by tests/test_layers.py).
"""

from __future__ import annotations

from typing import Any

# The numerics mode (docs/guides/reproducibility.md, "Same numbers on another machine") must be set before torch loads its
# kernels: a script sets it first thing with ``bench.numerics.apply("portable")``. No torch here.
from bench.core import numerics as numerics

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Resolved on first use, so that importing bench.core (every plugin does) never loads the runner.
    if name in ("evaluate", "table"):
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
