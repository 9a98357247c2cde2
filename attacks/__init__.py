"""Attack plugins. Each module registers its attacks with ``@register_attack``; pyproject.toml
declares it (``[project.entry-points."defense_bench.attacks"]``), and the registry imports what is
declared — nothing is imported by hand here, nothing is found by scanning."""

from attacks.base import AttackPlugin
from bench.core.registry import ATTACKS

ATTACKS.load()  # importing the package makes its attacks (and suites, cascades) available

__all__ = ["AttackPlugin"]
