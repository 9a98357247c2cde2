"""bench.core.record: the one record type, its constructor and reader, the bitmap codec, the worst case."""

import json
import pickle

import numpy as np
import pytest
import torch

from bench.core import record


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_bitmaps_round_trip(n):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    text = record.encode(mask)
    assert len(text) == 2 * ((n + 7) // 8)
    assert (record.decode(text, n) == mask.numpy()).all()
    assert record.encode(mask.numpy()) == text
    with pytest.raises(ValueError):
        record.decode(text, n + 8)


def test_stored_reference_bitmaps_decode():
    """A bitmap written by the pre-codec encoder of the committed records still decodes: 0x80 is
    image 0 right, the rest wrong."""
    assert record.decode("80", 3).tolist() == [True, False, False]


def _outcomes(n=4):
    return {k: np.array([1, 0, 1, 1][:n], bool) for k in record.OUTCOMES}


def test_make_builds_bitmaps_accuracies_and_refuses_a_record_missing_identity():
    fields = _fields()
    rec = record.make("cell", _outcomes(), **fields)
    assert rec["schema"] == record.SCHEMA and rec["kind"] == "cell" and rec["checks"] == []
    assert rec["defended_adv_acc"] == 0.75 and rec["defended_adv_acc_ci_low"] < 0.75 < rec["defended_adv_acc_ci_high"]
    assert record.decode(rec["correct"]["adv"], 4).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="identity"):
        record.make("cell", _outcomes(), **{k: v for k, v in fields.items() if k != "identity"})


def test_from_json_brings_older_records_up_to_the_schema():
    old = {"attack": "worst", "defense": "none", "checks": None}
    rec = record.Record.from_json(old)
    assert rec["kind"] == "worst" and rec.is_worst and rec["checks"] == [] and rec["schema"] == record.SCHEMA
    assert old == {"attack": "worst", "defense": "none", "checks": None}  # the stored dict is not touched
    assert record.Record.from_json({"attack": "pgd"})["kind"] == "cell"


def test_schema_2_fit_facts_move_under_fit_and_the_flat_row_is_unchanged():
    """A schema-2 record stored whatever fit() returned at the top level: schema 3 reads those
    under ``fit``, and the flat row tables are built from is the stored dict as it was."""
    old = {
        "schema": 2,
        "kind": "cell",
        "attack": "pgd",
        "defense": "countergan",
        "n": 4,
        "checks": [],
        "classifier_source": "shipped:abc",
        "defense_weights_hash": "w",
        "generator_iterations": 300,
    }
    rec = record.Record.from_json(json.dumps(old))
    assert rec["fit"] == {"classifier_source": "shipped:abc", "defense_weights_hash": "w", "generator_iterations": 300}
    assert "classifier_source" not in rec and rec.row() == {**old, "schema": record.SCHEMA, "check_codes": []}
    assert record.Record.from_json(rec.to_json()) == rec  # a schema-3 line reads back the same


def test_stored_warnings_get_their_codes_and_new_ones_are_stored_with_theirs():
    from bench.core.checkcodes import Check

    old = {"schema": 2, "kind": "cell", "checks": ["pgd is weaker than FGSM at the same eps on x", "something new"]}
    rec = record.Record.from_json(old)
    assert rec["check_codes"] == ["weaker-than-fgsm", "other"]
    made = record.make(
        "cell", _outcomes(), **_fields(), checks=[Check("leaves-range", "adversarial images leave [0,1]")]
    )
    assert made["checks"] == ["adversarial images leave [0,1]"] and made["check_codes"] == ["leaves-range"]
    assert made.with_checks([]).check_list() == [] and made.check_list()[0].code == "leaves-range"
    with pytest.raises(ValueError, match="unknown check code"):
        Check("made-up", "x")


def test_a_record_is_immutable_declared_and_strict():
    rec = record.make("cell", _outcomes(), **_fields())
    with pytest.raises(AttributeError):
        rec.n = 5
    with pytest.raises(TypeError):
        rec["n"] = 5  # type: ignore[index]
    with pytest.raises(KeyError, match="not a record field"):
        rec.get("defense_fit_ky")  # a typo cannot read None
    with pytest.raises(ValueError, match="undeclared record field"):
        record.make("cell", _outcomes(), **_fields(), classifier_source="shipped:x")  # fit facts go under fit
    with pytest.raises(ValueError, match="kind"):
        record.Record({"kind": "other"})
    assert rec.replace(n=5)["n"] == 5 and rec["n"] == 4
    assert rec.defended_adv_acc == rec["defended_adv_acc"] and rec.samples is None
    assert pickle.loads(pickle.dumps(rec)) == rec  # Ray ships records between processes
    with pytest.raises(ValueError, match="newer code"):
        record.Record.from_json({"schema": record.SCHEMA + 1, "kind": "cell"})


def test_a_field_of_another_type_is_refused_and_reads_are_typed():
    """Issue 39: each field carries a type; a value of another type is refused where a record is
    built or read back, in one line naming the field; attribute reads are typed (an absent field
    reads None only where its type admits None)."""
    rec = record.make("cell", _outcomes(), **_fields())
    for field, bad in (("n", "4"), ("n", True), ("eps", "0.3"), ("identity", []), ("max_linf", "big"), ("kind", "cel")):
        with pytest.raises(ValueError, match=field):
            rec.replace(**{field: bad})
        with pytest.raises(ValueError, match=field):
            record.Record.from_json({**json.loads(rec.to_json()), field: bad})
    assert rec.replace(eps=1)["eps"] == 1 and rec.replace(eps=None)["eps"] is None  # JSON's int is a float
    assert rec.n == 4 and rec.limit is None  # int | None: absent reads None
    with pytest.raises(AttributeError, match="holds no 'cascade'"):
        _ = rec.cascade  # list[str]: absent does not read None
    with pytest.raises(AttributeError):
        _ = rec.not_a_field


def test_every_field_is_declared_with_a_type_a_group_and_a_meaning():
    assert all(f.group in record.GROUPS and len(f.meaning) > 10 for f in record.FIELDS.values())
    assert all(f.type is not None for f in record.FIELDS.values())
    assert record.FIELDS["eps"].type == (float | None) and record.FIELDS["n"].type is int
    rec = record.make("cell", _outcomes(), **_fields(), fit={"defense_source": "trained:x"})
    assert rec.group("fit") == {"fit": {"defense_source": "trained:x"}}
    assert set(rec.group("outcomes")) >= {"correct", "defended_adv_acc", "checks"}


def _fields():
    return dict(
        cell_key="k",
        identity={"kind": "cell"},
        dataset="mnist",
        classifier="c",
        defense="none",
        attack="fgsm",
        eps=0.3,
        threat="gray",
        n=4,
        device="cpu",
        time=0.0,
    )


def test_committed_records_all_load_and_round_trip():
    """Every record the repository ships (written by schemas 1 and 2, on CPU and GPU) loads into a
    ``Record`` (every key it holds is declared, or a fit fact), and writes and reads back as itself."""
    from pathlib import Path

    from bench.store.runs import iter_records

    root = Path(__file__).resolve().parents[1] / "results"
    folders = sorted({p.parents[2] for p in root.glob("**/runs/*/records.jsonl")})
    recs = [r for d in folders for r in iter_records(d)]
    assert len(recs) > 1000
    assert all(isinstance(r, record.Record) and r.kind in record.KINDS and r.schema == record.SCHEMA for r in recs)
    assert all(set(r["correct"]) == set(record.OUTCOMES) for r in recs if isinstance(r.get("correct"), dict))
    assert all(record.Record.from_json(r.to_json()) == r for r in recs)


def test_record_make_is_the_only_writer_of_records():
    """No module but bench.core.record builds a record: no dict literal elsewhere holds the
    ``correct`` bitmaps beside other fields (callers hand their fields to ``record.make``, which
    adds bitmaps and accuracies; ``bench verify`` compares a bare ``correct``)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "bench"
    bad = []
    for path in root.rglob("*.py"):
        if path.name == "record.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            keys = {k.value for k in getattr(node, "keys", []) if isinstance(k, ast.Constant)}
            if isinstance(node, ast.Dict) and "correct" in keys and len(node.keys) > 1:
                bad.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert not bad, bad


def test_the_record_type_and_its_codec_load_no_torch():
    """The value types (the record, its bitmaps) are read by the report, the page and verify's
    grading; loading torch for them cost every reader seconds and tied them to the computation."""
    import subprocess
    import sys

    code = "import sys, bench.core.record, bench.core.bitmaps; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_codec_takes_tensors_and_arrays_alike():
    import numpy as np
    import torch

    from bench.core import bitmaps

    mask = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], bool)
    assert bitmaps.encode(mask) == bitmaps.encode(torch.from_numpy(mask)) == bitmaps.encode(mask.tolist())
    assert bitmaps.decode_tensor(bitmaps.encode(mask), 9).tolist() == mask.tolist()
    worst = bitmaps.resubmission({"defended_adv": [mask, torch.from_numpy(~mask | mask)]})["worst"]
    assert isinstance(worst[0], np.ndarray) and worst[0].tolist() == mask.tolist()
