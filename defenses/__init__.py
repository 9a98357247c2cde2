"""Defense plugins. Each module registers its defenses with ``@register_defense``; pyproject.toml
declares it (``[project.entry-points."defense_bench.defenses"]``), and the registry imports what is
declared — nothing is imported by hand here, nothing is found by scanning."""

from bench.core.registry import DEFENSES
from defenses.base import Defense

DEFENSES.load()  # importing the package makes its defenses available, as a lookup does

__all__ = ["Defense"]
