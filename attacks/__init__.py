"""Attack plugins. Each module registers one attack family; import it here to make it available."""

from attacks import aa_component, autoattack, bim, cw, deepfool, fgsm, pgd  # noqa: F401
from attacks.base import AttackPlugin

__all__ = ["AttackPlugin"]
