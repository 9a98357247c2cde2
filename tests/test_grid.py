"""bench.cli.grid: reference grids are files (their steps beside their records), run by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import read_records

from bench.cli import main
from bench.core.config import load_grid

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "results" / "reference"


def test_a_grid_file_runs_its_steps_in_order(tmp_path, tiny_toml, cache_dir):
    out = tmp_path / "results"
    common = f'"--config", "{tiny_toml}", "--cache-dir", "{cache_dir}", "--results-dir", "{out}", "--limit", "16"'
    (tmp_path / "grid.toml").write_text(
        "[grid]\nsteps = [\n"
        f'  [{common}, "--defenses", "none"],\n'
        f'  [{common}, "--defenses", "bitdepth"],\n'
        f'  ["report", "--results-dir", "{out}", "--no-plots"],\n]\n'
    )
    assert main(["grid", str(tmp_path)]) == 0
    assert sorted(r["defense"] for r in read_records(out)) == ["bitdepth", "none"]
    assert "bitdepth" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "text, match",
    [
        ("[run]\nlimit = 5\n", "no \\[grid\\] steps"),
        ("[grid]\nsteps = [[]]\n", "no \\[grid\\] steps"),
        ("[grid]\nsteps = [['--limit', 5]]\n", "no \\[grid\\] steps"),
        ("[grid]\nsteps = [['--limit', '5']]\nextra = 1\n", "unknown key.*extra"),
    ],
)
def test_a_bad_grid_file_is_one_line_and_exit_2(tmp_path, capsys, text, match):
    (tmp_path / "grid.toml").write_text(text)
    assert main(["grid", str(tmp_path / "grid.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err)


def test_a_failing_step_stops_the_grid(tmp_path, capsys):
    (tmp_path / "grid.toml").write_text("[grid]\nsteps = [['--defenses', 'nonexistent'], ['list']]\n")
    assert main(["grid", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "step 1 failed" in out.out and "step 2/2" not in out.out


def test_every_reference_grid_is_a_file_whose_runs_write_into_its_folder():
    grids = sorted(p for p in REF.iterdir() if p.is_dir())
    assert grids, "no reference grids"
    for g in grids:
        steps = load_grid(g / "grid.toml")
        rel = g.relative_to(ROOT).as_posix()
        for s in steps:
            if "--results-dir" in s:
                assert s[s.index("--results-dir") + 1] == rel, (g.name, s)
            elif "--config" in s:
                assert f'results_dir = "{rel}"' in (ROOT / s[s.index("--config") + 1]).read_text(), (g.name, s)
            else:
                pytest.fail(f"{g.name}: step {s} names no results folder")
        assert steps[-1][0] == "report", f"{g.name}: the last step regenerates the tables"


def test_the_makefile_runs_grids_by_name_and_names_no_issue():
    text = (ROOT / "Makefile").read_text()
    names = re.search(r"^GRIDS := (.*)$", text, re.M).group(1).split()
    assert sorted(names) == sorted(p.name for p in REF.iterdir() if p.is_dir())
    assert not re.search(r"\bissues? \d+|#\d+", text, re.I)


def test_a_grid_time_budget_and_extra_arguments_reach_every_run_step(tmp_path, tiny_toml, cache_dir, capsys):
    out = tmp_path / "results"
    common = f'"--config", "{tiny_toml}", "--cache-dir", "{cache_dir}", "--results-dir", "{out}", "--limit", "64"'
    (tmp_path / "grid.toml").write_text(
        "[grid]\nsteps = [\n"
        f'  [{common}, "--defenses", "none"],\n'
        f'  ["report", "--results-dir", "{out}", "--no-plots"],\n]\n'
    )
    # `--` arguments come after the step's own: the later --limit wins; the budget is the grid's.
    assert main(["grid", str(tmp_path), "--time-budget", "600", "--", "--limit", "8"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"--limit 64 --defenses none --limit 8 --time-budget (59\d|600)\b", printed), printed
    assert [r["n"] for r in read_records(out)] == [8]
    assert "report" in printed and "--time-budget" not in printed.split("step 2/2")[1].splitlines()[0]


def test_a_spent_grid_budget_skips_the_remaining_run_steps_but_draws_the_report(tmp_path, monkeypatch, capsys):
    import bench.cli.grid as grid

    ran: list[list[str]] = []
    monkeypatch.setattr(grid, "bench_main", lambda argv: ran.append(argv) or 0)
    clock = iter([0.0, 0.5, 5.0, 6.0, 7.0])  # the deadline is 2 s: step 1 starts in time, step 2 not
    monkeypatch.setattr(grid.time, "monotonic", lambda: next(clock))
    (tmp_path / "grid.toml").write_text(
        "[grid]\nsteps = [['--defenses', 'none'], ['--defenses', 'bitdepth'], ['report', '--results-dir', 'x']]\n"
    )
    assert main(["grid", str(tmp_path), "--time-budget", "2"]) == 0
    assert ran == [["--defenses", "none", "--time-budget", "1"], ["report", "--results-dir", "x"]]
    assert "step 2/3 skipped: --time-budget 2 s spent" in capsys.readouterr().out
