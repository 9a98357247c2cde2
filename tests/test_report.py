import json

import pandas as pd

from bench.cli import main
from bench.report import frame


def write_records(results, records):
    run = results / "runs" / "r1"
    run.mkdir(parents=True)
    with open(run / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write('{"torn": ')  # a line a killed run was writing


def rec(defense, adv, t, **extra):
    base = dict(dataset="mnist", classifier="mnist-cnn", defense=defense, threat="gray", attack="fgsm",
                eps=0.3, n=100, clean_acc=0.99, adv_acc=0.2, defended_clean_acc=0.98,
                defended_adv_acc=adv, defense_ms_per_sample=0.5, attack_ms_per_sample=1.0,
                device="cpu", time=t)
    base.update(extra)
    return base


def test_latest_duplicate_wins_and_missing_fields_are_tolerated(tmp_path):
    records = [rec("a", 0.5, 1.0), rec("a", 0.7, 2.0), rec("b", 0.6, 1.5)]
    del records[2]["attack_ms_per_sample"]
    write_records(tmp_path, records)
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 2
    assert df.set_index("defense").loc["a", "defended_adv_acc"] == 0.7
    assert pd.isna(df.set_index("defense").loc["b", "attack_ms_per_sample"])


def test_report_is_byte_for_byte_reproducible(tmp_path):
    write_records(tmp_path, [rec("a", 0.123456789, 1.0), rec("none", 0.2, 2.0, eps=None, attack="cw")])
    main(["report", "--results-dir", str(tmp_path)])
    first = (tmp_path / "results.md").read_bytes()
    (tmp_path / "results.md").unlink()
    main(["report", "--results-dir", str(tmp_path)])
    assert (tmp_path / "results.md").read_bytes() == first
    assert b"0.1235" in first


def test_csv_keeps_unrounded_values(tmp_path):
    write_records(tmp_path, [rec("a", 0.123456789012345, 1.0)])
    main(["report", "--results-dir", str(tmp_path)])
    assert pd.read_csv(tmp_path / "results.csv")["defended_adv_acc"][0] == 0.123456789012345


def test_empty_store():
    assert frame([]).empty
