"""Threat models: what the attack differentiates through.

* ``gray``  — the bare classifier (the setting of counterGAN and DefenseGAN).
* ``white`` — classifier ∘ defense, end to end (through DefenseGAN's unrolled steps). A
  defense marked ``differentiable = False`` (JPEG) is attacked through BPDA instead, and the
  record says so in ``threat_effective``.
* ``bpda``  — forward through the defense, backward as the identity (Athalye et al. 2018).
* ``bpda-eot`` — BPDA, with each loss gradient averaged over ``eot_samples`` draws of the
  defense's randomness (the expectation over transformations of the *gradient*, as in
  Athalye et al.); the averaging is done by the attack's EOT form (``build_eot``), each
  forward pass of the wrapper drawing afresh; an attack without one of its own attacks the mean
  of the draws' logits (``MeanOverDraws``). A deterministic defense is drawn once.
The attacks themselves are torchattacks attacks run on these wrapper modules.
"""

from __future__ import annotations

import torch
from torch import nn

THREATS = ("gray", "white", "bpda", "bpda-eot")
TRANSFER = (
    "transfer:"  # transfer:<classifier>[@seed=N]: crafted on that (bare) surrogate, scored on the defended target
)
ALL = "all"  # stored rows only: the per-sample worst over every threat model of a grid
THREAT_NAMES = {
    "gray": "gray-box",
    "white": "white-box",
    "bpda": "BPDA",
    "bpda-eot": "BPDA + EOT",
    ALL: "all threat models (per-sample worst)",
}
THREAT_ORDER = (*THREATS, ALL)


# Threats that differ from white-box only in the gradient an attack gets: a gradient-free attack
# (Square) sees the same defended outputs under them, so its white-box cell is its cell there too.
SAME_OUTPUTS_AS_WHITE = ("bpda", "bpda-eot")


class Threat(str):
    """A threat model as a value, parsed once where configuration or a stored record enters:
    ``kind`` (gray, white, bpda, bpda-eot, transfer, or all for a stored worst-over-threats row),
    and for transfer the ``surrogate`` classifier and its ``seed`` (None: the run's). It *is* its
    canonical text (a ``str``), so identities, records and JSON hold it unchanged; everything the
    code asks of a threat is asked here — nothing outside this module compares threat names.

    >>> t = Threat("transfer:mnist-mlp@seed=3"); (t.kind, t.surrogate, t.seed, t.name)
    ('transfer', 'mnist-mlp', 3, 'transfer from mnist-mlp (seed 3)')
    """

    kind: str
    surrogate: str | None
    seed: int | None

    def __new__(cls, text: str) -> Threat:
        if isinstance(text, Threat):
            return text
        if not isinstance(text, str):
            raise ValueError(f"a threat model is a string, not {text!r}")
        surrogate, seed = None, None
        if text.startswith(TRANSFER):
            name, sep, seed_text = text[len(TRANSFER) :].partition("@seed=")
            if not name or (sep and not seed_text.isdigit()):
                raise ValueError(f"unknown threat {text!r}; a transfer threat is transfer:<classifier>[@seed=N]")
            kind, surrogate, seed = "transfer", name, (int(seed_text) if sep else None)
        elif text in THREAT_ORDER:
            kind = text
        else:
            raise ValueError(
                f"unknown threat {text!r}; available: {', '.join(THREATS)}, transfer:<classifier>[@seed=N]"
            )
        obj = super().__new__(cls, text)
        for k, v in (("kind", kind), ("surrogate", surrogate), ("seed", seed)):
            object.__setattr__(obj, k, v)
        return obj

    parse = classmethod(lambda cls, text: cls(text))

    @classmethod
    def stored(cls, text: object) -> Threat:
        """A stored row's threat, never refused: one this code does not know (a legacy or a
        hand-edited record) has kind "other" and answers False to every question."""
        try:
            return cls(text)  # type: ignore[arg-type]
        except ValueError:
            obj = str.__new__(cls, "" if text is None else str(text))
            for k, v in (("kind", "other"), ("surrogate", None), ("seed", None)):
                object.__setattr__(obj, k, v)
            return obj

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Threat is immutable")

    def __reduce__(self) -> tuple:
        return (Threat.stored if self.kind == "other" else Threat), (str(self),)

    @property
    def is_gray(self) -> bool:
        return self.kind == "gray"

    @property
    def is_white(self) -> bool:
        return self.kind == "white"

    @property
    def is_bpda(self) -> bool:
        """BPDA proper (not BPDA+EOT)."""
        return self.kind == "bpda"

    @property
    def is_eot(self) -> bool:
        return self.kind == "bpda-eot"

    @property
    def is_transfer(self) -> bool:
        return self.kind == "transfer"

    @property
    def is_all(self) -> bool:
        return self.kind == ALL

    @property
    def same_outputs_as_white(self) -> bool:
        """BPDA and BPDA+EOT: the defended model's outputs are white-box's, only the gradient differs."""
        return self.kind in SAME_OUTPUTS_AS_WHITE

    @property
    def through_defense(self) -> bool:
        """The attack queries the defended model (white-box, BPDA, BPDA+EOT), not a bare classifier."""
        return self.kind in ("white", *SAME_OUTPUTS_AS_WHITE)

    @property
    def name(self) -> str:
        """As tables name it."""
        if self.is_transfer:
            return f"transfer from {self.surrogate}" + (f" (seed {self.seed})" if self.seed is not None else "")
        return THREAT_NAMES.get(self.kind, str(self))

    def query(self, gradient_free: bool) -> Threat:
        """The threat a cell is planned under. A gradient-free attack (Square) only reads the
        defended model's outputs, and BPDA and BPDA+EOT differ from white-box only in the gradient
        they return: under those its cells are the white-box ones, computed once."""
        return Threat("white") if gradient_free and self.same_outputs_as_white else self

    def effective(self, differentiable: bool) -> Threat:
        """What the attack really differentiates through: a defense without useful gradients
        (``differentiable = False``, e.g. JPEG) is attacked white-box through BPDA."""
        return Threat("bpda") if self.is_white and not differentiable else self

    def draws(self, randomized: bool, requested: int) -> int | None:
        """EOT draws a cell really uses: only bpda-eot draws, and a deterministic defense once."""
        if not self.is_eot:
            return None
        return requested if randomized else 1


def order(text: str) -> int:
    """Where a stored row's threat sorts in tables: gray, white, BPDA, BPDA+EOT, all, then transfers."""
    return THREAT_ORDER.index(text) if text in THREAT_ORDER else len(THREAT_ORDER)


def over_all(threat: object) -> bool:
    """A stored row's threat is "all": the per-sample worst over every threat model."""
    return Threat.stored(threat).is_all


def threat_name(threat: str) -> str:
    """A threat model as tables name it (an unknown stored name as it is)."""
    return Threat.stored(threat).name


def table_title(dataset: str, classifier: str, threat: str) -> str:
    """The title of one paper-view table; report, adequacy notes and paired tests share it."""
    return f"{dataset} · {classifier} · {threat_name(threat)}"


class WhiteBox(nn.Module):
    """classifier(defense(x)), differentiable end to end."""

    def __init__(self, classifier: nn.Module, defense: nn.Module) -> None:
        super().__init__()
        self.classifier, self.defense = classifier, defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.defense(x))


class BPDA(nn.Module):
    """classifier(x + (defense(x) − x).detach()): the defense's Jacobian taken as the identity.
    Each call is one draw of a randomized defense."""

    def __init__(self, classifier: nn.Module, defense: nn.Module) -> None:
        super().__init__()
        self.classifier, self.defense = classifier, defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            d = self.defense(x.detach().clone())  # a copy: the defense may not write into x
        return self.classifier(x + (d - x).detach())


class MeanOverDraws(nn.Module):
    """The mean of ``draws`` forward passes of a randomized ``model``: EOT for an attack that has
    no gradient-averaging form of its own (FAB, CW …). Its gradient is the mean of the draws'
    gradients of the logits, so the attack descends the expected logits (Athalye et al.'s
    expectation, taken over the model's output instead of over the attack's loss)."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        self.model, self.draws = model, draws
        # The mode it wraps: torchattacks puts a model it found in train mode back into train
        # mode after each attack, which would switch the classifier's dropout on.
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.draws)]).mean(0)


def attack_model(
    threat: str, classifier: nn.Module, defense: nn.Module, surrogate: nn.Module | None = None
) -> nn.Module:
    """The module the attack sees, in eval mode: torchattacks restores the mode it found after
    each attack, and a wrapper left in train mode would switch the classifier's dropout on."""
    t = Threat(threat)
    if t.is_gray:
        return classifier.eval()
    if t.is_transfer:
        if surrogate is None:
            raise ValueError(f"{t}: a transfer threat attacks its surrogate, and none was given")
        return surrogate.eval()
    if t.is_white:
        return WhiteBox(classifier, defense).eval()
    return BPDA(classifier, defense).eval()
