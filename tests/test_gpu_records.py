"""The committed GPU measurements (results/gpu/<run>/): provenance named, grids runnable, reports
regenerated from their records."""

import json
import re
import shutil
from pathlib import Path

from bench.core.config import load_grid

ROOT = Path(__file__).resolve().parent.parent
GPU = ROOT / "results" / "gpu"


def test_every_gpu_run_names_its_commit_and_leaves_the_records_commit_empty():
    """The GPU machine had no .git: the commit is named in PROVENANCE.md, never written into the
    records after the fact (nothing there could check it)."""
    runs = sorted(p for p in GPU.iterdir() if p.is_dir())
    assert runs
    for run in runs:
        text = (run / "PROVENANCE.md").read_text()
        assert re.search(r"commit `[0-9a-f]{7,40}`", text), run.name
        assert "git_commit" in text and "`.git`" in text, run.name
        envs = sorted(run.glob("*/runs/*/env.json"))
        assert envs, run.name
        for env in envs:
            assert not json.loads(env.read_text()).get("git_commit"), env.relative_to(ROOT)


def test_every_gpu_grid_writes_into_its_folder_and_ends_with_its_report():
    grids = sorted(GPU.glob("*/*/grid.toml"))
    assert grids
    for path in grids:
        rel = path.parent.relative_to(ROOT).as_posix()
        steps = load_grid(path)
        for s in steps:
            assert s[s.index("--results-dir") + 1] == rel, (rel, s)
            if "--config" in s:
                assert (ROOT / s[s.index("--config") + 1]).is_file(), (rel, s)
        assert steps[-1][0] == "report" and all("--device" in s and "cuda" in s for s in steps[:-1]), rel
        assert (path.parent / "runs").is_dir(), rel


def test_committed_gpu_records_regenerate_their_tables_byte_for_byte(tmp_path):
    from bench.render.report import write_report

    grids = [p.parent for p in sorted(GPU.glob("*/*/results.md"))]
    assert grids
    for grid in grids:
        copy = tmp_path / grid.name
        shutil.copytree(grid / "runs", copy / "runs")
        write_report(copy, plots=False)
        assert (copy / "results.md").read_text() == (grid / "results.md").read_text(), grid.name
