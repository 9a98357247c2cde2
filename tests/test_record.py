"""bench.core.record: the one record type, its constructor and reader, the bitmap codec, the worst case."""
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


def test_worst_case_is_right_only_where_every_cell_is():
    a = {k: record.encode(np.array([1, 1, 0, 1], bool)) for k in record.OUTCOMES}
    b = {k: record.encode(np.array([1, 0, 1, 1], bool)) for k in record.OUTCOMES}
    worst = record.worst_case([a, b], 4)
    assert set(worst) == set(record.OUTCOMES)
    assert worst["defended_adv"].tolist() == [True, False, False, True]


def _outcomes(n=4):
    return {k: np.array([1, 0, 1, 1][:n], bool) for k in record.OUTCOMES}


def test_make_builds_bitmaps_accuracies_and_refuses_a_record_missing_identity():
    fields = dict(cell_key="k", identity={"kind": "cell"}, dataset="mnist", classifier="c", defense="none",
                  attack="fgsm", eps=0.3, threat="gray", n=4, device="cpu", time=0.0)
    rec = record.make("cell", _outcomes(), **fields)
    assert rec["schema"] == record.SCHEMA and rec["kind"] == "cell" and rec["checks"] == []
    assert rec["defended_adv_acc"] == 0.75 and rec["defended_adv_acc_ci_low"] < 0.75 < rec["defended_adv_acc_ci_high"]
    assert record.decode(rec["correct"]["adv"], 4).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="identity"):
        record.make("cell", _outcomes(), **{k: v for k, v in fields.items() if k != "identity"})


def test_load_brings_older_records_up_to_the_schema():
    old = {"attack": "worst", "defense": "none", "checks": None}
    rec = record.load(old)
    assert rec["kind"] == "worst" and rec["checks"] == [] and rec["schema"] == record.SCHEMA
    assert old == {"attack": "worst", "defense": "none", "checks": None}  # the stored dict is not touched
    assert record.load({"attack": "pgd"})["kind"] == "cell"


def test_committed_reference_records_all_load():
    """Every record the repository ships (written by older schemas) loads through the one reader."""
    from pathlib import Path

    from bench.store.runs import iter_records
    root = Path(__file__).resolve().parents[1] / "results" / "reference"
    recs = [r for d in sorted(p for p in root.iterdir() if p.is_dir()) for r in iter_records(d)]
    assert len(recs) > 100
    assert all(r["kind"] in ("cell", "worst") and r["schema"] == record.SCHEMA for r in recs)
    assert all(set(r["correct"]) == set(record.OUTCOMES) for r in recs if isinstance(r.get("correct"), dict))


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
