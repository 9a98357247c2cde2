"""bench.store: the results folder lock and the git state every record names."""

from __future__ import annotations

import pytest


def test_a_results_dir_in_use_is_refused(tmp_path):
    from bench.core.errors import BenchError
    from bench.store.runs import ResultsLock

    lock = ResultsLock(tmp_path)
    with pytest.raises(BenchError, match="in use by another run"):
        ResultsLock(tmp_path)
    lock.release()
    ResultsLock(tmp_path).release()


def test_git_state_names_dirty_code_files_but_not_growing_results(tmp_path):
    import subprocess

    import bench.store.provenance as store

    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    (repo / "results" / "reference").mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
    run("init", "-q")
    (repo / "bench" / "code.py").write_text("x = 1\n")
    records = repo / "results" / "reference" / "grid" / "runs" / "r1" / "records.jsonl"
    records.parent.mkdir(parents=True)
    records.write_text("{}\n")
    (repo / "results" / "reference" / "grid" / "results.md").write_text("table\n")
    (repo / "results" / "reference" / "grid" / "grid.toml").write_text("[run]\n")
    run("add", "-A")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    records.write_text("{}\n{}\n")  # a run appends
    (repo / "results" / "reference" / "grid" / "results.md").write_text("table 2\n")
    sha, files = store.git_state(repo)
    assert not sha.endswith("-dirty") and files == []
    (repo / "bench" / "code.py").write_text("x = 2\n")
    (repo / "results" / "reference" / "grid" / "grid.toml").write_text("[run]\nlimit = 5\n")  # an input
    sha, files = store.git_state(repo)
    assert sha.endswith("-dirty") and files == ["bench/code.py", "results/reference/grid/grid.toml"]
