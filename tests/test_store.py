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


def test_a_line_no_reader_can_use_is_named_with_its_file_and_line(tmp_path, capsys, monkeypatch):
    """Issue 38: a damaged line and a torn last line (a crash mid-write) are skipped, never in silence."""
    import bench.store.runs as runs

    monkeypatch.setattr(runs, "_named", set())
    path = tmp_path / "runs" / "r1" / "records.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('["a list"]\n\n{"damaged\n{"cut": ')
    assert list(runs.iter_records(tmp_path)) == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err  # the empty line 2 holds nothing to lose
    assert err[0] == f"[store] warning: {path}:1: a JSON list, not a record; skipped"
    assert err[1].startswith(f"[store] warning: {path}:3: not JSON (") and err[1].endswith("; skipped")
    assert err[2] == f"[store] warning: {path}:4: a torn last line (a run stopped while writing it); skipped"
    list(runs.iter_records(tmp_path))  # a second reader in the same process: said once is enough
    assert capsys.readouterr().err == ""


def test_report_verify_and_the_runners_store_lookup_name_a_cut_last_line(run_args, capsys, monkeypatch):
    import bench.store.runs as runs
    from bench.cli import main
    from bench.run.verify import stored_cells

    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    (path,) = run_args.results.glob("runs/*/records.jsonl")
    lines = path.read_text().splitlines()
    with open(path, "a") as f:
        f.write(lines[0][: len(lines[0]) // 2])  # a crash mid-write
    named = f"[store] warning: {path}:{len(lines) + 1}: a torn last line"
    capsys.readouterr()
    for read in (
        lambda: main(["report", "--results-dir", str(run_args.results)]) == 0,
        lambda: len(stored_cells(run_args.results)[0]) == 1,  # what bench verify recomputes
        lambda: main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0,  # all reused
    ):
        monkeypatch.setattr(runs, "_named", set())  # each reader as in a process of its own
        assert read()
        assert named in capsys.readouterr().err
