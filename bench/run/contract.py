"""The plugin contract, checked where a plugin's output enters the harness.

A defense maps NCHW images in [0,1] to images of the same shape, dtype and device in [0,1]; an
attack returns adversarial images of its input's shape, dtype and device. A plugin is user code on
a user's machine: what it returns is checked before anything scores it, because a wrong shape
otherwise fails deep inside the classifier (never naming the plugin) and a NaN is silently scored
as a prediction. The checks cost one reduction per batch (``torch.aminmax``) and a few attribute
comparisons:

* a wrong shape, dtype or device, or a NaN/inf value, ends the run: ``ContractError`` (a
  ``BenchError``: one line, exit 2) naming the plugin, what it returned and what was expected;
* a defense's values outside [0,1] (beyond float error) are only flagged: the cell is stored with
  the ``defense-range`` check (an attack's are flagged by the worker as ``leaves-range``, its
  perturbation beyond eps as ``exceeds-eps``);
* a plugin that raises: ``PluginFailed``, chained to the plugin's own exception, whose traceback
  the CLI shows (it is the user's code) above one last line naming the plugin and the cell.

``bench.api.run`` adds where the cells finished before the failure are stored (``stored_in``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from bench.core.contract import RANGE_TOL, defense_output, describe, out_of_range, same_kind
from bench.core.errors import BenchError, PluginFailed

# The tensor checks live in the core (a plugin's own tests call them through bench.plugin).
__all__ = [
    "RANGE_TOL",
    "blamed",
    "cell_name",
    "checked_attack",
    "defense_output",
    "describe",
    "out_of_range",
    "same_kind",
]


def cell_name(cell: Any) -> str:
    """A cell as a reader finds it in the table: attack, eps, threat, and its key."""
    ident = cell.identity
    return f"cell {ident.get('attack')} eps={ident.get('eps')} {ident.get('threat')} (key {cell.key})"


def blamed(kind: str, name: str, where: str, call: Callable[[], Any]) -> Any:
    """``call()``; an exception from the plugin's code becomes ``PluginFailed`` (a ``BenchError``
    it raised on purpose passes as it is: it is already one line for the user)."""
    try:
        return call()
    except BenchError:
        raise
    except Exception as exc:
        raise PluginFailed(kind, name, where) from exc


def checked_attack(name: str, attack: Any) -> Any:
    """``attack`` with its ``perturb`` and ``perturb_eot`` checked: a raise names the attack, and
    what they return must be finite and of the input's shape, dtype and device. Wrapped on the
    instance, so its class (part of nothing's identity, but what ``isinstance`` sees) is unchanged."""
    for method in ("perturb", "perturb_eot"):
        inner = getattr(attack, method, None)
        if inner is None or getattr(inner, "_contract_checked", False):
            continue

        def wrapped(model: Any, x: torch.Tensor, y: torch.Tensor, eps: Any, *rest: Any, _inner: Any = inner) -> Any:
            where = f"eps={eps}, a batch of {len(x)} image(s)"
            adv = blamed("attack", name, where, lambda: _inner(model, x, y, eps, *rest))
            same_kind("attack", name, where, x, adv)
            return adv

        functools.update_wrapper(wrapped, inner)
        wrapped._contract_checked = True  # type: ignore[attr-defined]
        setattr(attack, method, wrapped)
    return attack
