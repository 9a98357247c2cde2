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

# code → what it flags (the message opening older records are recognised by, where one is fixed)
CODES: dict[str, tuple[str, str]] = {
    "undeclared-randomness": (
        "the defense's outputs vary between calls but it does not declare randomized = True",
        "outputs differ between calls but the defense does not declare randomized",
    ),
    "randomness-not-averaged": (
        "a randomised defense attacked under a threat that does not average over its draws (use bpda-eot)",
        "randomized defense under ",
    ),
    "gradient-replaced": (
        "white-box attacked through BPDA: the defense declares no useful gradients (differentiable = False)",
        "the defense declares no useful gradients",
    ),
    "zero-gradient": ("no or zero gradients through the attacked model", "zero gradients through the attacked model"),
    "nonfinite-gradient": ("NaN or inf gradients through the attacked model", "NaN/inf gradients"),
    "exceeds-eps": ("the perturbation exceeds eps", "perturbation exceeds eps"),
    "leaves-range": ("adversarial images leave [0,1]", "adversarial images leave [0,1]"),
    "defense-range": (
        "the defense's outputs leave [0,1] (the contract forbids it)",
        "the defense's outputs leave [0,1]",
    ),
    "wrote-input": ("the defense wrote into its input (the contract forbids it)", "the defense wrote into its input"),
    "label-leak": ("signs of label leaking (Kurakin et al. 2017)", "label leaking?"),
    "weaker-than-fgsm": ("an iterative attack weaker than FGSM on the same cell", "is weaker than FGSM"),
    "masked-gradients": (
        "a gradient attack beaten by a gradient-free one beyond both intervals",
        "may be misled by masked gradients",
    ),
    "square-improves": (
        "a cascade's gradient-free stage (Square) lowers the robust accuracy its gradient stages left (AutoAttack's flag)",
        "the cascade's gradient-free stage",
    ),
    "other": ("a stored warning this code has no code for (kept and shown as it is)", "\x00"),
}
# Checks that compare cells: recomputed over every stored record by the report, never trusted as stored.
COMPARING = ("weaker-than-fgsm", "masked-gradients", "square-improves")


@dataclass(frozen=True)
class Check:
    code: str  # one of CODES
    message: str  # what a reader is told, with the numbers

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown check code {self.code!r}; known: {', '.join(CODES)}")


def code_of(message: str) -> str:
    """The code of a stored message (records written before codes); "other" when none fits."""
    for code, (_, opening) in CODES.items():
        if opening in message:
            return code
    return "other"


def split(checks: list[Check]) -> dict[str, list[str]]:
    """The record fields a list of checks is stored as."""
    return {"checks": [c.message for c in checks], "check_codes": [c.code for c in checks]}
