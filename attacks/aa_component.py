"""AutoAttack's components as attacks of their own (Croce & Hein 2020), and the suites ``aa``,
``aa-individual`` and ``aa-rand``.

``--attack aa`` is AutoAttack's standard evaluation, a cascade: APGD-CE on every image, then
APGD-T on the images APGD-CE left robust, FAB-T on those APGD-T left robust, Square (5,000
queries) on the rest (``ATTACKS.suite(..., cascade=True)``). Each stage is stored as its own cell, whose
outcomes are "robust after this stage" (an image it did not run on keeps the previous stage's
outcome; ``ran_on`` says which it ran on), and the ``aa`` row is their per-sample worst (= the
last stage). ``--attack aa-individual`` runs every component on every image, each its own cell,
combined per sample into an ``aa-individual`` row (the ``aa`` of records stored before the
cascade existed); ``--attack aa-rand`` runs the version
for randomised defenses, APGD-CE and APGD-DLR with 20 EOT draws per gradient. Each component
gets the threat's model (white-box end to end, BPDA, BPDA+EOT, gray-box, transfer); under
``bpda-eot`` a randomised defense's draws replace APGD's EOT count and FAB-T attacks the mean of
the draws' logits; Square, gradient-free, has one cell for white-box, BPDA and BPDA+EOT (BPDA
changes only the gradient; on a randomised defense it queries one draw at a time under all three:
``bench.core.threats.Threat.query``).

Budgets are the paper's, not torchattacks' defaults (which run APGD and FAB for 10 iterations):
100 iterations for APGD and FAB, one restart each, 5,000 queries for Square; APGD-T and FAB-T
target the 9 runner-up classes (every other class of 10). Override per component, e.g.
``[attacks.aa-apgd-ce] steps = 200``; every parameter is recorded in the cell's identity.
"""

from __future__ import annotations

from typing import Any

import torchattacks

from attacks import aa_faster
from attacks.base import AttackPlugin
from bench.core.registry import ATTACKS, register_attack

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")


@register_attack("aa-component")
class AutoAttackComponent(AttackPlugin):
    """One AutoAttack component, L∞ (torchattacks.APGD / APGDT / FAB / Square).

    Args (keyword-only): component = "apgd-ce" (apgd-ce | apgd-dlr | apgd-t | fab-t | square),
    steps = 100 (APGD, FAB iterations), n_queries = 5000 (Square), restarts = 1,
    eot_iter = 1 (APGD's gradient draws; the rand version uses 20), seed = 0,
    rescale_schedule = False (Square: stretch the schedule of square sizes over ``n_queries``, as
    torchattacks does by default; AutoAttack's standard version keeps the paper's schedule, tuned
    for 10,000 queries, and so does this default).
    Shape: images N×C×H×W in [0,1] → the same, within eps (L∞).
    Example: ``python -m bench --attack aa --eps 0.3 --threat white`` (the suite) or
    ``--attack aa-square``.
    """

    iterative = True

    def __init__(
        self,
        *,
        component: str = "apgd-ce",
        steps: int = 100,
        n_queries: int = 5000,
        restarts: int = 1,
        eot_iter: int = 1,
        seed: int = 0,
        rescale_schedule: bool = False,
    ) -> None:
        if component not in COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, not {component!r}")
        if min(steps, n_queries, restarts, eot_iter) < 1:
            raise ValueError("steps, n_queries, restarts and eot_iter must be ≥ 1")
        self.component, self.steps, self.n_queries = component, steps, n_queries
        self.restarts, self.eot_iter, self.seed = restarts, eot_iter, seed
        self.rescale_schedule = rescale_schedule
        self.gradient_free = component == "square"
        self.supports_eot = component.startswith("apgd")

    def effective_params(self, eps: float | None, spec: Any) -> dict[str, Any]:
        # Square's schedule: the standard one is named in the identity, so cells stored before it
        # was the default (torchattacks' stretched schedule, whose identities have no such field)
        # are never taken for it, and keep their keys (``bench verify`` recomputes them as they were).
        budget: dict[str, Any] = {"steps": self.steps}
        if self.gradient_free:
            budget = {"n_queries": self.n_queries, **({} if self.rescale_schedule else {"rescale_schedule": False})}
        eot = {"eot_iter": self.eot_iter} if self.supports_eot else {}
        return {"component": self.component, **budget, "restarts": self.restarts, **eot, "seed": self.seed}

    def build(self, model, eps, spec, eot_iter: int | None = None):
        common = dict(norm="Linf", eps=eps, n_restarts=self.restarts, seed=self.seed)
        k = spec.num_classes
        if self.component in ("apgd-ce", "apgd-dlr"):
            return torchattacks.APGD(
                model, steps=self.steps, loss=self.component[5:], eot_iter=eot_iter or self.eot_iter, **common
            )
        if self.component == "apgd-t":
            return torchattacks.APGDT(
                model, steps=self.steps, n_classes=k, eot_iter=eot_iter or self.eot_iter, **common
            )
        # FAB-T and Square leave out the passes whose answers they already hold (attacks.aa_faster):
        # the same algorithm, draws and examples as torchattacks' (tests/test_aa_faster.py).
        if self.component == "fab-t":
            return aa_faster.FAB(model, steps=self.steps, multi_targeted=True, n_classes=k, **common)
        return aa_faster.Square(model, n_queries=self.n_queries, resc_schedule=self.rescale_schedule, **common)

    def build_eot(self, model, eps, spec, draws):
        if not self.supports_eot:  # FAB-T: on the mean of the draws' logits (AttackPlugin's form)
            return super().build_eot(model, eps, spec, draws)
        return self.build(model, eps, spec, eot_iter=max(draws, self.eot_iter))


_PAPER = "AutoAttack's"
VARIANTS = {
    "aa-apgd-ce": ({"component": "apgd-ce"}, f"{_PAPER} APGD with the cross-entropy loss, 100 iterations."),
    "aa-apgd-t": (
        {"component": "apgd-t"},
        f"{_PAPER} targeted APGD (DLR loss), the 9 runner-up classes, 100 iterations.",
    ),
    "aa-fab-t": ({"component": "fab-t"}, f"{_PAPER} targeted FAB, the 9 runner-up classes, 100 iterations."),
    "aa-square": ({"component": "square"}, f"{_PAPER} Square, gradient-free (margin loss), 5,000 queries."),
    "aa-apgd-ce-rand": (
        {"component": "apgd-ce", "eot_iter": 20},
        f"{_PAPER} rand version: APGD-CE with each gradient averaged over 20 draws.",
    ),
    "aa-apgd-dlr-rand": (
        {"component": "apgd-dlr", "eot_iter": 20},
        f"{_PAPER} rand version: APGD-DLR with each gradient averaged over 20 draws.",
    ),
}
for _name, (_preset, _doc) in VARIANTS.items():
    ATTACKS.variant(
        _name,
        AutoAttackComponent,
        preset=_preset,
        class_name="AutoAttack_" + _name.replace("-", "_"),
        doc=f"{_doc}\n\nExample: ``python -m bench --attack {_name} --eps 0.3``",
    )

STANDARD = ("aa-apgd-ce", "aa-apgd-t", "aa-fab-t", "aa-square")
ATTACKS.suite(
    "aa",
    STANDARD,
    "AutoAttack, standard version, as a cascade: APGD-CE, then APGD-T, FAB-T and Square 5,000 each on "
    "the images still robust; robust accuracy after each stage, per-sample worst as `aa`.",
    cascade=True,
)
ATTACKS.suite(
    "aa-individual",
    STANDARD,
    "AutoAttack's standard components, each on every image (the `aa` of records stored before the "
    "cascade); per-sample worst as `aa-individual`.",
)
ATTACKS.suite(
    "aa-rand",
    ("aa-apgd-ce-rand", "aa-apgd-dlr-rand"),
    "AutoAttack for randomised defenses: APGD-CE and APGD-DLR with 20 EOT draws; per-sample worst as `aa-rand`.",
)
