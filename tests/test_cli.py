"""Bad input: one line on stderr, exit 2, stored results untouched."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stored(tmp_path_factory, cache_dir):
    """One real stored run that every bad input below must leave untouched."""
    from conftest import TINY_TOML

    tmp = tmp_path_factory.mktemp("stored")
    (tmp / "tiny.toml").write_text(TINY_TOML)

    def make(*extra):
        return [
            "--config",
            str(tmp / "tiny.toml"),
            "--cache-dir",
            str(cache_dir),
            "--results-dir",
            str(tmp / "results"),
            "--limit",
            "48",
            *extra,
        ]

    make.results = tmp / "results"
    assert main(make("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    return make


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/defense-bench-pwned",))


def bad_inputs(tmp: Path) -> dict[str, list[str]]:
    (tmp / "malformed.toml").write_text("[run\nlimit = ")
    (tmp / "unknown.toml").write_text("[run]\nlimmit = 3\n")
    (tmp / "badtable.toml").write_text("[runn]\nlimit = 3\n")
    (tmp / "badparam.toml").write_text("[attacks.pgd]\nstepz = 3\n")
    (tmp / "corrupt.pt").write_bytes(b"\x00garbage")
    torch.save({"w": Evil()}, tmp / "evil.pt")
    return {
        "unknown defense": ["--defenses", "nonee"],
        "unknown attack": ["--attack", "fgsmm"],
        "unknown dataset": ["--dataset", "mnistt"],
        "unknown classifier": ["--classifier", "resnet9000"],
        "unknown threat": ["--threat", "grey"],
        "eps zero": ["--eps", "0"],
        "eps negative": ["--eps", "-0.1"],
        "eps above one": ["--eps", "1.5"],
        "eps not a number": ["--eps", "abc"],
        "limit zero": ["--limit", "0"],
        "limit not int": ["--limit", "ten"],
        "batch size negative": ["--batch-size", "-4"],
        "missing config": ["--config", str(tmp / "missing.toml")],
        "malformed config": ["--config", str(tmp / "malformed.toml")],
        "unknown config key": ["--config", str(tmp / "unknown.toml")],
        "unknown config table": ["--config", str(tmp / "badtable.toml")],
        "unknown plugin param": ["--config", str(tmp / "badparam.toml"), "--attack", "pgd"],
        "external plugin missing": ["--defenses", "no_such_pkg.mod:Defense"],
        "dataset missing offline": ["--dataset", "cifar10", "--data-root", str(tmp / "empty")],
        "missing weights": ["--classifier-weights", str(tmp / "nope.pt")],
        "corrupted weights": ["--classifier-weights", str(tmp / "corrupt.pt")],
        "crafted pickle weights": ["--classifier-weights", str(tmp / "evil.pt")],
        "unknown flag": ["--frobnicate"],
        "bad device": ["--device", "tpu"],
    }


NAMES = [
    "unknown defense",
    "unknown attack",
    "unknown dataset",
    "unknown classifier",
    "unknown threat",
    "eps zero",
    "eps negative",
    "eps above one",
    "eps not a number",
    "limit zero",
    "limit not int",
    "batch size negative",
    "missing config",
    "malformed config",
    "unknown config key",
    "unknown config table",
    "unknown plugin param",
    "external plugin missing",
    "dataset missing offline",
    "missing weights",
    "corrupted weights",
    "crafted pickle weights",
    "unknown flag",
    "bad device",
]


@pytest.mark.parametrize("case", NAMES)
def test_bad_input_is_one_line_exit_2_and_keeps_records(case, stored, tmp_path, capsys):
    extra = bad_inputs(tmp_path)[case]
    before = snapshot(stored.results)
    args = stored()
    if extra[0] == "--config":  # replace the tiny config
        i = args.index("--config")
        args = args[:i] + args[i + 2 :]
    code = main(args + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert snapshot(stored.results) == before
    assert not Path("/tmp/defense-bench-pwned").exists()


def test_unknown_name_message_lists_what_exists(run_args, capsys):
    assert main(run_args("--defenses", "nonee")) == 2
    err = capsys.readouterr().err
    assert "did you mean none" in err and "available:" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_without_cuda_is_refused(run_args, capsys):
    assert main(run_args("--device", "cuda")) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_subprocess_exit_code_and_single_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--eps", "abc", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: invalid eps 'abc': not a number"]
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--eps", "abc", "--debug"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_list_shows_every_plugin(capsys):
    from bench.core.registry import ATTACKS, CLASSIFIERS, DATASETS, DEFENSES

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for reg in (DATASETS, CLASSIFIERS, DEFENSES, ATTACKS):
        for name in reg.names():
            assert name in out
    for name, (members, _) in ATTACKS.suites.items():  # suites and their members too
        assert f"  {name} " in out and ", ".join(members) in out
