"""Threat models: what the attack differentiates through.

* ``gray``  — the bare classifier (the setting of counterGAN and DefenseGAN).
* ``white`` — classifier ∘ defense, end to end (through DefenseGAN's unrolled steps).
* ``bpda``  — forward through the defense, backward as the identity (Athalye et al. 2018).
* ``bpda-eot`` — BPDA, logits averaged over ``eot_samples`` draws of the defense's randomness,
  so the gradient is the expectation over transformations.
The attacks themselves are torchattacks attacks run on these wrapper modules.
"""
from __future__ import annotations

import torch
from torch import nn

THREATS = ("gray", "white", "bpda", "bpda-eot")


class WhiteBox(nn.Module):
    """classifier(defense(x)), differentiable end to end."""

    def __init__(self, classifier: nn.Module, defense: nn.Module) -> None:
        super().__init__()
        self.classifier, self.defense = classifier, defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.defense(x))


class BPDA(nn.Module):
    """classifier(x + (defense(x) − x).detach()): the defense's Jacobian taken as the identity."""

    def __init__(self, classifier: nn.Module, defense: nn.Module, eot_samples: int = 1) -> None:
        super().__init__()
        self.classifier, self.defense, self.eot_samples = classifier, defense, eot_samples

    def purified(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            d = self.defense(x.detach())
        return x + (d - x).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [self.classifier(self.purified(x)) for _ in range(self.eot_samples)]
        return torch.stack(logits).mean(0)


def attack_model(threat: str, classifier: nn.Module, defense: nn.Module, eot_samples: int) -> nn.Module:
    """The module the attack sees, in eval mode: torchattacks restores the mode it found after
    each attack, and a wrapper left in train mode would switch the classifier's dropout on."""
    if threat == "gray":
        return classifier.eval()
    if threat == "white":
        return WhiteBox(classifier, defense).eval()
    return BPDA(classifier, defense, eot_samples if threat == "bpda-eot" else 1).eval()
