"""Defense plugins. Each module of this package registers its defenses with ``@register_defense``,
and the registry imports every module here on its first lookup: a new built-in defense is one new
file, nothing else to edit (bench.core.registry)."""

from bench.core.registry import DEFENSES
from defenses.base import Defense

DEFENSES.load()  # importing the package makes its defenses available, as a lookup does

__all__ = ["Defense"]
