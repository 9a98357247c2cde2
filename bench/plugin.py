"""One import for plugin authors: the base classes, the registration decorators and the shape
contract's checks.

    import torch
    from bench.plugin import Defense, register_defense

    @register_defense("squeeze")
    class Squeeze(Defense):
        '''Reduce each pixel to `bits` bits. Example: ``python -m bench --defenses none,squeeze``'''

        def __init__(self, *, bits: int = 3) -> None:
            super().__init__()
            self.levels = 2**bits - 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.round(x * self.levels) / self.levels

Three ways to use it (docs/adding-a-defense.md): as ``module:Class`` from anywhere on the path; by
name from a pip-installed package that declares it as an entry point (group
``defense_bench.defenses`` or ``defense_bench.attacks``: ``squeeze = "mypkg.squeeze:Squeeze"``);
or, in this repository, as a built-in (its file in defenses/ or attacks/, nothing else). A plugin is
identified by that name, never by the module it lies in. This module imports the core and the
plugin base classes only: whatever the runner or the report become, a plugin written against it
keeps working.
"""

from __future__ import annotations

from attacks.base import AttackPlugin
from bench.core.contract import RANGE_TOL, check_defense, defense_output, out_of_range, same_kind
from bench.core.errors import BenchError, ContractError
from bench.core.registry import register_attack, register_defense
from defenses.base import Defense

Attack = AttackPlugin  # the shorter name; one class

__all__ = [
    "RANGE_TOL",
    "Attack",
    "AttackPlugin",
    "BenchError",
    "ContractError",
    "Defense",
    "check_defense",
    "defense_output",
    "out_of_range",
    "register_attack",
    "register_defense",
    "same_kind",
]
