"""The stored record: one type, one constructor, one reader.

A record is one evaluated cell (``kind = "cell"``) or one per-sample worst case over cells
(``kind = "worst"``), written one JSON object a line by ``bench.store.runs.RunWriter``. In memory
it is a ``Record``: immutable, every field declared in ``FIELDS`` with its group and meaning;
``make`` is the only function that builds one (the runner's worker and driver call it),
``Record.from_json`` the only one that reads one back (it brings older layouts up to this one),
``Record.row`` the flat view pandas frames are built from.

Per-sample outcomes: for each of ``OUTCOMES``, a bitmap of one bit per test image, encoded and
decoded by ``bench.core.bitmaps`` (re-exported here for the readers of records). No torch: the
value type loads nothing the computation needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bench.core import checkcodes
from bench.core.bitmaps import OUTCOMES as OUTCOMES
from bench.core.bitmaps import accuracies as accuracies
from bench.core.bitmaps import decode as decode
from bench.core.bitmaps import decode_tensor as decode_tensor
from bench.core.bitmaps import encode as encode
from bench.core.bitmaps import first_images as first_images
from bench.core.bitmaps import resubmission as resubmission
from bench.core.checkcodes import Check, Code, code_of

SCHEMA = 3
# 1: records written before "kind" existed (same fields; the kind implied by "attack")
# 2: "kind" stored; whatever a classifier's or defense's fit returned stored as top-level fields
# 3: those fit facts under one "fit" mapping; every top-level field declared in FIELDS
ACCURACIES = ("clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc")
KINDS = ("cell", "worst")
GROUPS = ("header", "identity", "data", "outcomes", "resubmission", "cost", "provenance", "fit")


@dataclass(frozen=True)
class Field:
    group: str  # one of GROUPS
    meaning: str


def _fields() -> dict[str, Field]:
    out: dict[str, Field] = {}

    def group(name: str, **meanings: str) -> None:
        for key, meaning in meanings.items():
            out[key] = Field(name, meaning)

    group(
        "header",
        schema="the layout this record was written in (SCHEMA; older ones are upgraded by from_json)",
        kind='"cell": one evaluated cell; "worst": the per-sample worst case over cells (the only worst marker)',
    )
    group(
        "identity",
        cell_key="bench.core.identity.key(identity): the cell's name in caches, joins and verify",
        identity="bench.core.identity.cell_identity: the only source of 'same cell'",
        dataset="the dataset's name",
        classifier="the classifier's registered name",
        classifier_hash="hash of the classifier's tensors: the exact weights evaluated",
        defense="the defense's registered (or variant) name",
        defense_params="its hyperparameters",
        defense_randomized="the defense draws randomness per call (its outputs vary)",
        attack="the attack's name, a suite's, or \"worst\" on a worst row",
        attack_params="the attack's effective parameters (a worst row: the attacks it covers)",
        attack_labels='"true" or "predicted": the labels the attack was crafted with',
        norm="the threat's norm (Linf …)",
        eps="the budget (None: an unbounded attack)",
        threat='the threat model (bench.core.threats), "all" for the worst over threat models',
        threat_effective="what the attack really differentiated through (white → bpda for JPEG)",
        eot_samples="EOT draws averaged per gradient (None outside bpda-eot)",
        iterative="the attack iterates (FGSM does not): the masking check's comparison",
        gradient_free="the attack reads no gradient (Square): the masking check's witness",
        cascade="a cascade stage (--attack aa's APGD-T, FAB-T, Square): the earlier stages' attacks",
        ran_on="a cascade stage: the images it ran on (hex bitmap, those the previous stage left robust)",
        seed="the run's random seed",
        n="test images scored (the first n of the test split)",
        limit="the --limit asked for",
        batch_size="images per batch",
    )
    group(
        "data",
        train_source="where the train split came from",
        test_source="where the test split came from",
        n_train="train images",
        n_test="test images in the split",
        data_fingerprint="hash of both splits",
    )
    group(
        "outcomes",
        correct='outcome → hex bitmap of per-image correctness (encode); "robust after this stage" on a stage',
        **{
            f"{o}_acc{s}": f"{o.replace('_', ' ')} accuracy" + (f", Wilson 95% {s[4:]}" if s else "")
            for o in OUTCOMES
            for s in ("", "_ci_low", "_ci_high")
        },
        max_linf="the largest L∞ perturbation the attack made",
        checks="warnings, as readers read them: the number is not a robustness claim as it stands",
        check_codes="the code of each of checks, in order (bench.core.checkcodes): what code decides on",
    )
    group(
        "resubmission",
        resubmit="--resubmit N on a randomised defense: defended_* are the worst over N draws",
        resubmit_correct='"<outcome>_majority" / "<outcome>_first_draw" → hex bitmap',
        **{
            f"defended_{o}_acc_{s}": f"defended {o} accuracy: {s.replace('_', ' ')} over the draws"
            for o in ("clean", "adv")
            for s in ("expected", "majority", "majority_ci_low", "majority_ci_high", "first_draw")
        },
    )
    group(
        "cost",
        classifier_ms_per_sample="classifier forward, ms per image",
        attack_ms_per_sample="crafting, ms per image",
        defense_ms_per_sample="the defense, ms per image",
        timing_batches="timed batches behind the ms figures (warm-up excluded)",
        attack_forward_per_sample="forward passes through the attacked model per test image (bench.run.passes); "
        "a suite row: the sum over its members; absent before they were counted",
        attack_backward_per_sample="backward passes, likewise",
    )
    group(
        "provenance",
        run_id="the run folder (its env.json: command line, versions, git commit)",
        device="the device label",
        device_type="cpu or cuda",
        gpu="the GPU's name (CUDA only)",
        cpu_model="the CPU model",
        torch_threads="torch's intra-op threads",
        blas="the BLAS torch uses",
        numerics='bench.core.numerics mode in force: "portable" or "native"',
        cpu_vendor="GenuineIntel, AuthenticAMD …",
        cpu_capability="the instruction set ATen ran at",
        cuda_deterministic="on CUDA: cuDNN deterministic / benchmark, torch's flag, cuBLAS workspace",
        time="UNIX time the record was made",
        samples="path of a few images (.npz) for the report's grid",
    )
    group(
        "fit",
        fit="facts of how the classifier and trained defense came to be: classifier_source / _key / _recipe, "
        "defense_source / _fit_key / _weights_hash, generator_*, and whatever a plugin's fit() returns",
    )
    return out


FIELDS = _fields()
# Fields every record of a kind carries: ``make`` refuses to build one without them (a worst row
# combines cells, so it names no device of its own).
_EVERY = ("cell_key", "identity", "dataset", "classifier", "defense", "attack", "eps", "threat", "n", "correct", "time")
REQUIRED = {"cell": (*_EVERY, "device"), "worst": _EVERY}


class Record(Mapping[str, Any]):
    """One stored result, immutable: a cell or a worst row. Every field is declared in ``FIELDS``
    with its group and meaning; an undeclared one is refused, and facts a plugin's fit returns live
    under ``fit``. Read it like a mapping (``rec["n"]``, ``rec.get("eps")``: a name that is not a
    field raises, so a typo cannot read None) or by attribute (``rec.defended_adv_acc``); change it
    with ``replace``; write it with ``to_json``; read one back with ``from_json``. ``row()`` is the
    flat view frames and tables use (fit facts beside the other fields, as older layouts stored them).
    """

    __slots__ = ("_fields",)
    _fields: dict[str, Any]

    def __init__(self, fields: Mapping[str, Any]) -> None:
        unknown = sorted(set(fields) - FIELDS.keys())
        if unknown:
            raise ValueError(
                f"undeclared record field(s) {', '.join(unknown)}: declare them in "
                "bench.core.record.FIELDS, or hand fit facts over under 'fit'"
            )
        if fields.get("kind") not in KINDS:
            raise ValueError(f"a record's kind is one of {', '.join(KINDS)}, not {fields.get('kind')!r}")
        object.__setattr__(self, "_fields", dict(fields))

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def get(self, name: str, default: Any = None) -> Any:
        if name not in FIELDS:
            raise KeyError(f"{name!r} is not a record field (bench.core.record.FIELDS)")
        return self._fields.get(name, default)

    def __getattr__(self, name: str) -> Any:
        if name in FIELDS:
            return self._fields.get(name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Record is immutable: use rec.replace(...)")

    def __reduce__(self) -> tuple[Any, ...]:  # Ray and multiprocessing ship records between processes
        return Record, (self._fields,)

    def __repr__(self) -> str:
        return f"Record({self._fields.get('kind')} {self._fields.get('cell_key')})"

    @property
    def is_worst(self) -> bool:
        return self._fields["kind"] == "worst"

    def replace(self, **changes: Any) -> Record:
        return Record({**self._fields, **changes})

    def group(self, name: str) -> dict[str, Any]:
        """The fields of one group (GROUPS) this record holds."""
        return {k: v for k, v in self._fields.items() if FIELDS[k].group == name}

    def row(self) -> dict[str, Any]:
        """The flat view frames use: every field, and each fit fact beside them under its own name."""
        out = {k: v for k, v in self._fields.items() if k != "fit"}
        for k, v in (self._fields.get("fit") or {}).items():
            out.setdefault(k, v)
        return out

    def check_list(self) -> list[Check]:
        """The checks as values (code and message)."""
        return [Check(c, m) for c, m in zip(self._fields["check_codes"], self._fields["checks"])]

    def with_checks(self, checks: list[Check]) -> Record:
        return self.replace(**checkcodes.split(checks))

    def to_json(self) -> str:
        return json.dumps(self._fields, sort_keys=True, default=str, allow_nan=True)

    @classmethod
    def from_json(cls, raw: str | Mapping[str, Any]) -> Record:
        """A stored record (a JSON line or its parsed object) as this code reads it: older layouts
        brought up to ``SCHEMA``. Derived, never guessed: a schema-1 record's kind from its attack;
        a schema-1/2 record's top-level fields this schema does not declare are its fit facts."""
        rec = dict(json.loads(raw) if isinstance(raw, str) else raw)
        version = rec.get("schema", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            version = 1  # the earliest records name none
        if version > SCHEMA:
            raise ValueError(f"a record of schema {version}, written by newer code (this code reads up to {SCHEMA})")
        if version < 2:
            rec.setdefault("kind", "worst" if rec.get("attack") == "worst" else "cell")
        if version < 3:
            fit = {k: rec.pop(k) for k in sorted(set(rec) - FIELDS.keys())}
            if fit:
                rec["fit"] = fit
        if not isinstance(rec.get("checks"), list):
            rec["checks"] = []
        if version < 3 or not isinstance(rec.get("check_codes"), list):
            rec["check_codes"] = [code_of(str(m)) for m in rec["checks"]]
        rec["schema"] = SCHEMA
        return cls(rec)


def checks_of(rec: Mapping[str, Any]) -> list[Check]:
    """A record's or a frame row's checks as values (a row without codes: recognised by message)."""
    messages = rec.get("checks")
    if not isinstance(messages, list):
        return []
    codes = rec.get("check_codes")
    if not isinstance(codes, list) or len(codes) != len(messages):
        codes = [code_of(str(m)) for m in messages]
    return [
        Check(Code(c), str(m)) if c in checkcodes.CODES else Check(Code.OTHER, str(m)) for c, m in zip(codes, messages)
    ]


def rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The flat rows a frame is built from: each record's ``row()`` (a plain mapping is read as a
    stored record first, so it is upgraded by the same rules)."""
    return [(r if isinstance(r, Record) else Record.from_json(r)).row() for r in records]


def make(kind: Literal["cell", "worst"], outcomes: Mapping[str, Any], **fields: Any) -> Record:
    """The one constructor of a stored record: ``fields`` (declared ones; fit facts under ``fit``;
    ``checks`` as ``Check`` values) plus the bitmaps and accuracies of the per-sample ``outcomes``
    (one boolean array per ``OUTCOMES``)."""
    rec: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": kind,
        **fields,
        "correct": {k: encode(outcomes[k]) for k in OUTCOMES},
        **accuracies(outcomes),
    }
    rec.update(checkcodes.split(list(rec.get("checks") or [])))
    if not rec.get("fit"):
        rec.pop("fit", None)
    absent = [k for k in REQUIRED[kind] if k not in rec]
    if absent:
        raise ValueError(f"a {kind} record needs {', '.join(absent)}")
    return Record(rec)
