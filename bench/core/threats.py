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
TRANSFER = "transfer:"  # transfer:<classifier>: crafted on that (bare) surrogate, scored on the defended target
# Stored rows may also carry "all": the per-sample worst over every threat model of a grid.
THREAT_NAMES = {"gray": "gray-box", "white": "white-box", "bpda": "BPDA", "bpda-eot": "BPDA + EOT",
                "all": "all threat models (per-sample worst)"}
THREAT_ORDER = (*THREATS, "all")


# Threats that differ from white-box only in the gradient an attack gets: a gradient-free attack
# (Square) sees the same defended outputs under them, so its white-box cell is its cell there too.
SAME_OUTPUTS_AS_WHITE = ("bpda", "bpda-eot")


def is_transfer(threat: str) -> bool:
    return threat.startswith(TRANSFER) and len(threat) > len(TRANSFER)


def surrogate_of(threat: str) -> tuple[str, int | None]:
    """(classifier, seed) of ``transfer:<classifier>[@seed=N]``: another architecture, or the target's
    own trained from another seed (seed None: the run's)."""
    name, _, seed = threat[len(TRANSFER):].partition("@seed=")
    return name, (int(seed) if seed.isdigit() else None)


def valid_transfer(threat: str) -> bool:
    name, sep, seed = threat[len(TRANSFER):].partition("@seed=")
    return is_transfer(threat) and bool(name) and (not sep or seed.isdigit())


def threat_name(threat: str) -> str:
    """A threat model as tables name it."""
    if is_transfer(threat):
        name, seed = surrogate_of(threat)
        return f"transfer from {name}" + (f" (seed {seed})" if seed is not None else "")
    return THREAT_NAMES.get(threat, threat)


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


def attack_model(threat: str, classifier: nn.Module, defense: nn.Module, surrogate: nn.Module | None = None
                 ) -> nn.Module:
    """The module the attack sees, in eval mode: torchattacks restores the mode it found after
    each attack, and a wrapper left in train mode would switch the classifier's dropout on."""
    if threat == "gray":
        return classifier.eval()
    if is_transfer(threat):
        return surrogate.eval()
    if threat == "white":
        return WhiteBox(classifier, defense).eval()
    return BPDA(classifier, defense).eval()
