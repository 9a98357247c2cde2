"""Defense plugins. Each module registers one defense; import it here to make it available."""

from defenses import bitdepth, countergan, defensegan, jpeg, median, noise, none  # noqa: F401
from defenses.base import Defense

__all__ = ["Defense"]
