"""The committed reference records: reproducible by this checkout, from clean commits only."""

import json
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"


def test_no_reference_record_comes_from_a_dirty_tree():
    envs = sorted(REFERENCE.glob("*/runs/*/env.json"))
    assert envs
    for path in envs:
        commit = json.loads(path.read_text()).get("git_commit")
        assert commit and not commit.endswith("-dirty"), f"{path.relative_to(ROOT)}: {commit}"


def test_the_cheapest_default_reference_cells_recompute_bit_for_bit(tmp_path, capsys):
    """`bench verify` on the committed default grid, from the shipped weights (a few cells, so
    CI stays fast; `make verify N=all` checks every one)."""
    rc = main(
        ["verify", "--results-dir", str(REFERENCE / "default"), "--sample", "3", "--cache-dir", str(tmp_path / "cache")]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    assert "3 cell(s): 3 identical" in out
    assert "shipped weights" in out  # nothing was trained: every model came from the zoo
    assert "[classifier] training" not in out and "[defense] training" not in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "grid",
    [
        "label-leak",
        "threat-matrix",
        "threat-matrix-aa",
        "fashion-threat-matrix",
        "defensegan",
        "adaptive",
        "ranking-n500",
    ],
)
def test_the_cheapest_cells_of_every_other_reference_grid_recompute(grid, tmp_path, capsys):
    """`make test-all` only (minutes on 2 cores): the same bit-for-bit check on each other grid,
    at the thread count each run recorded."""
    rc = main(
        ["verify", "--results-dir", str(REFERENCE / grid), "--sample", "2", "--cache-dir", str(tmp_path / "cache")]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    assert "2 cell(s): 2 identical" in out


def test_committed_records_regenerate_their_tables_byte_for_byte(tmp_path):
    """Every reference grid's results.md is what today's report code makes of its records."""
    import shutil

    from bench.render.report import write_report

    grids = [p.parent for p in sorted(REFERENCE.glob("*/results.md"))]
    assert grids
    for grid in grids:
        copy = tmp_path / grid.name
        shutil.copytree(grid / "runs", copy / "runs")
        write_report(copy, plots=False)
        assert (copy / "results.md").read_text() == (grid / "results.md").read_text(), grid.name
