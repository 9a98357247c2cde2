"""Attack plugins. Each module of this package registers its attacks with ``@register_attack``,
and the registry imports every module here on its first lookup: a new built-in attack is one new
file, nothing else to edit (bench.core.registry)."""

from attacks.base import AttackPlugin
from bench.core.registry import ATTACKS

ATTACKS.load()  # importing the package makes its attacks (and suites, cascades) available

__all__ = ["AttackPlugin"]
