"""The checks a record can carry, as codes with messages.

A check is a warning that a number is not a robustness claim as it stands (AutoAttack's flags,
the harness's own probes). Each has a code, which code decides on (the report recomputes the
checks that compare cells by code), and a message, which readers read (tables, the page, the
log). Records store both, side by side: ``checks`` (messages) and ``check_codes``. Records of
schemas 1 and 2 stored messages only: ``code_of`` recognises them by the messages' fixed
openings — the one place English text is matched, and only for records written before codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """A check's code: what code decides on (a ``str``, so records and JSON hold it unchanged)."""

    UNDECLARED_RANDOMNESS = "undeclared-randomness"
    RANDOMNESS_NOT_AVERAGED = "randomness-not-averaged"
    GRADIENT_REPLACED = "gradient-replaced"
    ZERO_GRADIENT = "zero-gradient"
    NONFINITE_GRADIENT = "nonfinite-gradient"
    EXCEEDS_EPS = "exceeds-eps"
    LEAVES_RANGE = "leaves-range"
    DEFENSE_RANGE = "defense-range"
    WROTE_INPUT = "wrote-input"
    LABEL_LEAK = "label-leak"
    WEAKER_THAN_FGSM = "weaker-than-fgsm"
    MASKED_GRADIENTS = "masked-gradients"
    SQUARE_IMPROVES = "square-improves"
    OTHER = "other"


# code → what it flags (the message opening older records are recognised by, where one is fixed)
CODES: dict[Code, tuple[str, str]] = {
    Code.UNDECLARED_RANDOMNESS: (
        "the defense's outputs vary between calls but it does not declare randomized = True",
        "outputs differ between calls but the defense does not declare randomized",
    ),
    Code.RANDOMNESS_NOT_AVERAGED: (
        "a randomised defense attacked under a threat that does not average over its draws (use bpda-eot)",
        "randomized defense under ",
    ),
    Code.GRADIENT_REPLACED: (
        "white-box attacked through BPDA: the defense declares no useful gradients (differentiable = False)",
        "the defense declares no useful gradients",
    ),
    Code.ZERO_GRADIENT: (
        "no or zero gradients through the attacked model",
        "zero gradients through the attacked model",
    ),
    Code.NONFINITE_GRADIENT: ("NaN or inf gradients through the attacked model", "NaN/inf gradients"),
    Code.EXCEEDS_EPS: ("the perturbation exceeds eps", "perturbation exceeds eps"),
    Code.LEAVES_RANGE: ("adversarial images leave [0,1]", "adversarial images leave [0,1]"),
    Code.DEFENSE_RANGE: (
        "the defense's outputs leave [0,1] (the contract forbids it)",
        "the defense's outputs leave [0,1]",
    ),
    Code.WROTE_INPUT: (
        "the defense wrote into its input (the contract forbids it)",
        "the defense wrote into its input",
    ),
    Code.LABEL_LEAK: ("signs of label leaking (Kurakin et al. 2017)", "label leaking?"),
    Code.WEAKER_THAN_FGSM: ("an iterative attack weaker than FGSM on the same cell", "is weaker than FGSM"),
    Code.MASKED_GRADIENTS: (
        "a gradient attack beaten by a gradient-free one beyond both intervals",
        "may be misled by masked gradients",
    ),
    Code.SQUARE_IMPROVES: (
        "a cascade's gradient-free stage (Square) lowers the robust accuracy its gradient stages left (AutoAttack's flag)",
        "the cascade's gradient-free stage",
    ),
    Code.OTHER: ("a stored warning this code has no code for (kept and shown as it is)", "\x00"),
}
# Checks that compare cells: recomputed over every stored record by the report, never trusted as stored.
COMPARING = (Code.WEAKER_THAN_FGSM, Code.MASKED_GRADIENTS, Code.SQUARE_IMPROVES)


@dataclass(frozen=True)
class Check:
    code: Code
    message: str  # what a reader is told, with the numbers

    def __post_init__(self) -> None:
        # A stored code (text) becomes its member; an unknown one is an error, not a new code.
        try:
            object.__setattr__(self, "code", Code(self.code))
        except ValueError:
            raise ValueError(f"unknown check code {self.code!r}; known: {', '.join(CODES)}") from None


def code_of(message: str) -> Code:
    """The code of a stored message (records written before codes); ``other`` when none fits."""
    for code, (_, opening) in CODES.items():
        if opening in message:
            return code
    return Code.OTHER


def split(checks: list[Check]) -> dict[str, list[str]]:
    """The record fields a list of checks is stored as."""
    return {"checks": [c.message for c in checks], "check_codes": [c.code for c in checks]}
