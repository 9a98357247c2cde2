"""Any torchattacks class by name: ``--attack torchattacks:PGDL2``."""

from __future__ import annotations

import inspect
from typing import Any

import torchattacks

from attacks.base import AttackPlugin
from bench.core.errors import BenchError

GRADIENT_FREE = ("Square", "OnePixel", "Pixle")  # torchattacks classes that query outputs only


class TorchattacksAttack(AttackPlugin):
    """Wraps ``torchattacks.<ClassName>``; parameters come from ``[attacks."torchattacks:Name"]``.

    ``eps`` from the grid is passed when the class takes it; otherwise the attack runs once
    with eps = None. Example: ``python -m bench --attack torchattacks:MIFGSM --eps 0.3``
    """

    iterative = True

    def __init__(self, class_name: str, params: dict[str, Any] | None = None) -> None:
        cls = getattr(torchattacks, class_name, None)
        if not inspect.isclass(cls) or not issubclass(cls, torchattacks.attack.Attack):
            names = sorted(
                n
                for n, c in vars(torchattacks).items()
                if inspect.isclass(c)
                and issubclass(c, torchattacks.attack.Attack)
                and n not in ("Attack", "MultiAttack")
            )
            raise BenchError(f"unknown attack 'torchattacks:{class_name}'; available: {', '.join(names)}")
        sig = inspect.signature(cls.__init__).parameters
        params = dict(params or {})
        bad = sorted(set(params) - set(sig) - {"self"} | ({"model", "eps"} & set(params)))
        if bad:
            raise BenchError(
                f"invalid parameter(s) {', '.join(bad)} for attack 'torchattacks:{class_name}'; "
                f"valid: {', '.join(k for k in sig if k not in ('self', 'model', 'eps'))}"
            )
        self.cls, self.params = cls, params
        self.uses_eps = "eps" in sig
        self.norm = "L2" if "L2" in class_name else "Linf"
        self.gradient_free = class_name in GRADIENT_FREE
        self.registered_name = f"torchattacks:{class_name}"
        self.hparams = params

    def effective_params(self, eps, spec):
        return dict(self.params)

    def build(self, model, eps, spec):
        kwargs = dict(self.params, **({"eps": eps} if self.uses_eps else {}))
        return self.cls(model, **kwargs)
