"""The stored record: one type, one constructor, one reader.

A record is one evaluated cell (``kind = "cell"``) or one per-sample worst case over cells
(``kind = "worst"``), written one JSON object a line by ``bench.store.runs.RunWriter``. In memory
it is a ``Record``: immutable, every field declared in ``Fields`` with its type, group and meaning;
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
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

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
class F:
    """A record field's declaration, in its annotation (``Annotated[type, F(group, meaning)]``)."""

    group: str  # one of GROUPS
    meaning: str


_ACC = "accuracy on the n test images (the fraction of ones in correct[outcome])"
_CI = "its Wilson 95% interval, {}"
_RESUB = "defended {} accuracy over the resubmitted draws: {}"


class Fields:
    """Every field a record may hold: its type, then ``F(group, meaning)``. The one list of record
    fields (``FIELDS`` is read off these annotations; ``Record`` inherits them, so
    ``rec.defended_adv_acc`` is a ``float`` to a type checker). A value of another type is refused
    where a record is built or read back (``conforms``)."""

    __slots__ = ()

    # header
    schema: Annotated[
        int, F("header", "the layout this record was written in (SCHEMA; older ones are upgraded by from_json)")
    ]
    kind: Annotated[
        Literal["cell", "worst"],
        F(
            "header",
            '"cell": one evaluated cell; "worst": the per-sample worst case over cells (the only worst marker)',
        ),
    ]
    # identity
    cell_key: Annotated[
        str, F("identity", "bench.core.identity.key(identity): the cell's name in caches, joins and verify")
    ]
    identity: Annotated[
        dict[str, Any], F("identity", "bench.core.identity.cell_identity: the only source of 'same cell'")
    ]
    dataset: Annotated[str, F("identity", "the dataset's name")]
    classifier: Annotated[str, F("identity", "the classifier's registered name")]
    classifier_hash: Annotated[str, F("identity", "hash of the classifier's tensors: the exact weights evaluated")]
    defense: Annotated[str, F("identity", "the defense's registered (or variant) name")]
    defense_params: Annotated[dict[str, Any], F("identity", "its hyperparameters")]
    defense_randomized: Annotated[bool, F("identity", "the defense draws randomness per call (its outputs vary)")]
    attack: Annotated[str, F("identity", "the attack's name, a suite's, or \"worst\" on a worst row")]
    attack_params: Annotated[
        dict[str, Any], F("identity", "the attack's effective parameters (a worst row: the attacks it covers)")
    ]
    attack_labels: Annotated[str, F("identity", '"true" or "predicted": the labels the attack was crafted with')]
    norm: Annotated[str, F("identity", "the threat's norm (Linf …)")]
    eps: Annotated[float | None, F("identity", "the budget (None: an unbounded attack)")]
    threat: Annotated[
        str, F("identity", 'the threat model (bench.core.threats.Threat), "all" for the worst over threat models')
    ]
    threat_effective: Annotated[
        str, F("identity", "what the attack really differentiated through (white → bpda for JPEG)")
    ]
    eot_samples: Annotated[int | None, F("identity", "EOT draws averaged per gradient (None outside bpda-eot)")]
    iterative: Annotated[bool, F("identity", "the attack iterates (FGSM does not): the masking check's comparison")]
    gradient_free: Annotated[bool, F("identity", "the attack reads no gradient (Square): the masking check's witness")]
    cascade: Annotated[
        list[str], F("identity", "a cascade stage (--attack aa's APGD-T, FAB-T, Square): the earlier stages' attacks")
    ]
    ran_on: Annotated[
        str, F("identity", "a cascade stage: the images it ran on (hex bitmap, those the previous stage left robust)")
    ]
    seed: Annotated[int, F("identity", "the run's random seed")]
    n: Annotated[int, F("identity", "test images scored (the first n of the test split)")]
    limit: Annotated[int | None, F("identity", "the --limit asked for")]
    batch_size: Annotated[int, F("identity", "images per batch")]
    # data
    train_source: Annotated[str, F("data", "where the train split came from")]
    test_source: Annotated[str, F("data", "where the test split came from")]
    n_train: Annotated[int, F("data", "train images")]
    n_test: Annotated[int, F("data", "test images in the split")]
    data_fingerprint: Annotated[str, F("data", "hash of both splits")]
    # outcomes
    correct: Annotated[
        dict[str, str],
        F("outcomes", 'outcome → hex bitmap of per-image correctness (encode); "robust after this stage" on a stage'),
    ]
    clean_acc: Annotated[float, F("outcomes", f"clean {_ACC}")]
    clean_acc_ci_low: Annotated[float, F("outcomes", _CI.format("low"))]
    clean_acc_ci_high: Annotated[float, F("outcomes", _CI.format("high"))]
    adv_acc: Annotated[float, F("outcomes", f"adv {_ACC}")]
    adv_acc_ci_low: Annotated[float, F("outcomes", _CI.format("low"))]
    adv_acc_ci_high: Annotated[float, F("outcomes", _CI.format("high"))]
    defended_clean_acc: Annotated[float, F("outcomes", f"defended clean {_ACC}")]
    defended_clean_acc_ci_low: Annotated[float, F("outcomes", _CI.format("low"))]
    defended_clean_acc_ci_high: Annotated[float, F("outcomes", _CI.format("high"))]
    defended_adv_acc: Annotated[float, F("outcomes", f"defended adv {_ACC}")]
    defended_adv_acc_ci_low: Annotated[float, F("outcomes", _CI.format("low"))]
    defended_adv_acc_ci_high: Annotated[float, F("outcomes", _CI.format("high"))]
    max_linf: Annotated[float, F("outcomes", "the largest L∞ perturbation the attack made")]
    checks: Annotated[
        list[str], F("outcomes", "warnings, as readers read them: the number is not a robustness claim as it stands")
    ]
    check_codes: Annotated[
        list[str], F("outcomes", "the code of each of checks, in order (bench.core.checkcodes): what code decides on")
    ]
    # resubmission
    resubmit: Annotated[
        int, F("resubmission", "--resubmit N on a randomised defense: defended_* are the worst over N draws")
    ]
    resubmit_correct: Annotated[
        dict[str, str], F("resubmission", '"<outcome>_majority" / "<outcome>_first_draw" → hex bitmap')
    ]
    defended_clean_acc_expected: Annotated[float, F("resubmission", _RESUB.format("clean", "expected"))]
    defended_clean_acc_majority: Annotated[float, F("resubmission", _RESUB.format("clean", "majority"))]
    defended_clean_acc_majority_ci_low: Annotated[float, F("resubmission", _RESUB.format("clean", "majority ci low"))]
    defended_clean_acc_majority_ci_high: Annotated[float, F("resubmission", _RESUB.format("clean", "majority ci high"))]
    defended_clean_acc_first_draw: Annotated[float, F("resubmission", _RESUB.format("clean", "first draw"))]
    defended_adv_acc_expected: Annotated[float, F("resubmission", _RESUB.format("adv", "expected"))]
    defended_adv_acc_majority: Annotated[float, F("resubmission", _RESUB.format("adv", "majority"))]
    defended_adv_acc_majority_ci_low: Annotated[float, F("resubmission", _RESUB.format("adv", "majority ci low"))]
    defended_adv_acc_majority_ci_high: Annotated[float, F("resubmission", _RESUB.format("adv", "majority ci high"))]
    defended_adv_acc_first_draw: Annotated[float, F("resubmission", _RESUB.format("adv", "first draw"))]
    # cost
    classifier_ms_per_sample: Annotated[float | None, F("cost", "classifier forward, ms per image")]
    attack_ms_per_sample: Annotated[float | None, F("cost", "crafting, ms per image")]
    defense_ms_per_sample: Annotated[float | None, F("cost", "the defense, ms per image")]
    timing_batches: Annotated[int, F("cost", "timed batches behind the ms figures (warm-up excluded)")]
    attack_forward_per_sample: Annotated[
        float,
        F(
            "cost",
            "forward passes through the attacked model per test image (bench.run.passes); "
            "a suite row: the sum over its members; absent before they were counted",
        ),
    ]
    attack_backward_per_sample: Annotated[float, F("cost", "backward passes, likewise")]
    # provenance
    run_id: Annotated[str, F("provenance", "the run folder (its env.json: command line, versions, git commit)")]
    device: Annotated[str, F("provenance", "the device label")]
    device_type: Annotated[str, F("provenance", "cpu or cuda")]
    gpu: Annotated[str | None, F("provenance", "the GPU's name (CUDA only)")]
    cpu_model: Annotated[str | None, F("provenance", "the CPU model")]
    torch_threads: Annotated[int, F("provenance", "torch's intra-op threads")]
    blas: Annotated[str | None, F("provenance", "the BLAS torch uses")]
    numerics: Annotated[str, F("provenance", 'bench.core.numerics mode in force: "portable" or "native"')]
    cpu_vendor: Annotated[str | None, F("provenance", "GenuineIntel, AuthenticAMD …")]
    cpu_capability: Annotated[str | None, F("provenance", "the instruction set ATen ran at")]
    cuda_deterministic: Annotated[
        dict[str, Any] | None,
        F("provenance", "on CUDA: cuDNN deterministic / benchmark, torch's flag, cuBLAS workspace"),
    ]
    time: Annotated[float, F("provenance", "UNIX time the record was made")]
    samples: Annotated[str | None, F("provenance", "path of a few images (.npz) for the report's grid")]
    # fit
    fit: Annotated[
        dict[str, Any],
        F(
            "fit",
            "facts of how the classifier and trained defense came to be: classifier_source / _key / _recipe, "
            "defense_source / _fit_key / _weights_hash, generator_*, and whatever a plugin's fit() returns",
        ),
    ]


@dataclass(frozen=True)
class Field(F):
    """A declared field as ``FIELDS`` holds it: its ``F`` and its annotation's type."""

    type: Any  # int, float | None, dict[str, Any] …


def _fields() -> dict[str, Field]:
    hints = get_type_hints(Fields, include_extras=True)
    out = {}
    for name, hint in hints.items():
        tp, (decl,) = get_args(hint)[0], get_args(hint)[1:]
        out[name] = Field(decl.group, decl.meaning, tp)
    return out


def conforms(value: Any, tp: Any) -> bool:
    """Whether a stored value has a field's type: JSON's kinds (an int is a float; a bool is not a
    number), a container's own kind (not its items), a Literal's values, either arm of a union."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        return any(conforms(value, arm) for arm in get_args(tp))
    if origin is Literal:
        return value in get_args(tp)
    if origin is not None:
        return isinstance(value, origin)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


FIELDS = _fields()
# Fields every record of a kind carries: ``make`` refuses to build one without them (a worst row
# combines cells, so it names no device of its own).
_EVERY = ("cell_key", "identity", "dataset", "classifier", "defense", "attack", "eps", "threat", "n", "correct", "time")
REQUIRED = {"cell": (*_EVERY, "device"), "worst": _EVERY}


class Record(Fields, Mapping[str, Any]):
    """One stored result, immutable: a cell or a worst row. Every field is declared in ``Fields``
    with its type, group and meaning; an undeclared field or a value of another type is refused
    (one line naming the field), and facts a plugin's fit returns live under ``fit``. Read it like
    a mapping (``rec["n"]``, ``rec.get("eps")``: a name that is not a field raises, so a typo cannot
    read None) or by attribute, typed (``rec.defended_adv_acc`` is a ``float``; an absent field reads
    None only where its type admits None, else raises); change it with ``replace``; write it with
    ``to_json``; read one back with ``from_json``. ``row()`` is the flat view frames and tables use
    (fit facts beside the other fields, as older layouts stored them).
    """

    __slots__ = ("_fields",)
    _fields: dict[str, Any]

    def __init__(self, fields: Mapping[str, Any]) -> None:
        unknown = sorted(set(fields) - FIELDS.keys())
        if unknown:
            raise ValueError(
                f"undeclared record field(s) {', '.join(unknown)}: declare them in "
                "bench.core.record.Fields, or hand fit facts over under 'fit'"
            )
        if fields.get("kind") not in KINDS:
            raise ValueError(f"a record's kind is one of {', '.join(KINDS)}, not {fields.get('kind')!r}")
        wrong = [k for k, v in fields.items() if not conforms(v, FIELDS[k].type)]
        if wrong:
            k = wrong[0]
            raise ValueError(
                f"record field {k} holds {fields[k]!r} ({type(fields[k]).__name__}), declared "
                f"{getattr(FIELDS[k].type, '__name__', FIELDS[k].type)} (bench.core.record.Fields)"
            )
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
        # Only reached for a declared field (the class's annotations declare it, nothing sets it).
        # An absent field reads None only where its type admits None, so a read is what it says.
        if name in FIELDS and (name in self._fields or conforms(None, FIELDS[name].type)):
            return self._fields.get(name)
        if name in FIELDS:
            raise AttributeError(f"this {self._fields.get('kind')} record holds no {name!r} (read it with .get)")
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
