"""bench.core.config: one validation path for the file, the flags and the API."""

from __future__ import annotations

from bench.cli import main


def test_config_types_are_checked(run_args, tmp_path, capsys):
    cases = {
        'rerun = "false"': "boolean",
        'offline = "no"': "boolean",
        'limit = "10"': "positive integer",
        "defenses = 3": "list of strings",
        "seed = -1": "non-negative",
    }
    for line, words in cases.items():
        (tmp_path / "bad.toml").write_text(f"[run]\n{line}\n")
        assert main(["--config", str(tmp_path / "bad.toml")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, line
    (tmp_path / "bad.toml").write_text('[run]\noffline = true\n[attacks.pgd]\nsteps = "many"\n')
    assert main(run_args("--config", str(tmp_path / "bad.toml"), "--attack", "fgsm")) == 2  # not in the grid
    assert "steps" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[run]\noffline = true\n[defenses.countergan]\nbogus = 1\n")
    assert main(run_args("--config", str(tmp_path / "bad.toml"))) == 2
    assert "bogus" in capsys.readouterr().err


def test_no_offline_overrides_the_file(tmp_path):
    from bench.cli.parser import run_parser
    from bench.core.config import resolve

    (tmp_path / "c.toml").write_text("[run]\noffline = true\nrerun = true\n")
    args = vars(run_parser().parse_args(["--no-offline", "--no-rerun"]))
    args.pop("debug")
    args.pop("config")
    cfg = resolve(args, str(tmp_path / "c.toml"))
    assert cfg.offline is False and cfg.rerun is False
