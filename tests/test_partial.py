"""bench.store.partial: the finished batches of a cell in progress, taken back after a kill.

The end-to-end check kills a run with SIGKILL once some batches are saved, reruns the same command
and compares every stored outcome with an uninterrupted run's: a resumed cell is the same cell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import read_records

from bench.store.partial import Batch, BatchStore

ROOT = Path(__file__).resolve().parents[1]
ENV = {"torch": "2.x", "numerics": "portable AVX2", "threads": 1, "device": "cpu", "code": "c0ffee"}


def batch(value: float = 0.5) -> Batch:
    return Batch(torch.full((2, 1, 4, 4), value), forward=80, backward=78, ms_per_sample=1.5)


def test_saved_batch_reads_back_as_itself(tmp_path):
    store = BatchStore(tmp_path, ENV)
    assert store.load("c1", 0, 2) is None
    store.save("c1", 0, 2, batch())
    got = store.load("c1", 0, 2)
    assert got is not None and torch.equal(got.adv, batch().adv)
    assert (got.forward, got.backward, got.ms_per_sample) == (80, 78, 1.5)
    assert store.saved("c1") == 1 and store.load("c1", 2, 4) is None


def test_batch_from_other_settings_is_recomputed(tmp_path):
    BatchStore(tmp_path, ENV).save("c1", 0, 2, batch())
    other = BatchStore(tmp_path, {**ENV, "threads": 2})
    assert other.load("c1", 0, 2) is None
    assert other.stale == [other.path("c1", 0, 2)]


def test_batch_computed_by_other_code_is_recomputed(tmp_path):
    BatchStore(tmp_path, ENV).save("c1", 0, 2, batch())
    assert BatchStore(tmp_path, {**ENV, "code": "beef"}).load("c1", 0, 2) is None


def test_code_version_follows_a_changed_file_but_not_the_batches(tmp_path):
    """A file that differs from HEAD changes the code's version; saved batches (outputs) do not."""
    from bench.store.partial import code_version

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "attack.py").write_text("STEPS = 40\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = code_version(tmp_path)
    BatchStore(tmp_path / "results", ENV).save("c1", 0, 2, batch())
    assert code_version(tmp_path) == clean
    (tmp_path / "attack.py").write_text("STEPS = 41\n")
    edited = code_version(tmp_path)
    assert edited != clean
    (tmp_path / "attack.py").write_text("STEPS = 42\n")
    assert code_version(tmp_path) not in (clean, edited)
    (tmp_path / "attack.py").write_text("STEPS = 40\n")
    assert code_version(tmp_path) == clean


def test_code_version_ignores_what_computes_nothing(tmp_path):
    """Editing or committing README, a grid file or a test keeps a killed cell's batches; committing
    a plugin change, or adding an untracked plugin module, does not."""
    from bench.store.partial import code_version

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    def commit() -> None:
        git("add", ".")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")

    git("init", "-q")
    (tmp_path / "attack.py").write_text("STEPS = 40\n")
    (tmp_path / "README.md").write_text("v1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("X = 1\n")
    commit()
    clean = code_version(tmp_path)
    (tmp_path / "README.md").write_text("v2\n")
    (tmp_path / "tests" / "test_x.py").write_text("X = 2\n")
    assert code_version(tmp_path) == clean
    commit()
    assert code_version(tmp_path) == clean
    (tmp_path / "mine.py").write_text("class Mine: ...\n")
    assert code_version(tmp_path) != clean
    (tmp_path / "mine.py").unlink()
    (tmp_path / "attack.py").write_text("STEPS = 41\n")
    commit()
    assert code_version(tmp_path) != clean


def test_cut_file_is_recomputed_not_an_error(tmp_path):
    store = BatchStore(tmp_path, ENV)
    store.save("c1", 0, 2, batch())
    path = store.path("c1", 0, 2)
    path.write_bytes(path.read_bytes()[:20])  # a kill in the middle of a write elsewhere
    assert store.load("c1", 0, 2) is None


def test_rerun_saves_but_takes_nothing_back(tmp_path):
    BatchStore(tmp_path, ENV).save("c1", 0, 2, batch())
    assert BatchStore(tmp_path, ENV, read=False).load("c1", 0, 2) is None


def test_discard_removes_the_craft_and_an_empty_folder(tmp_path):
    store = BatchStore(tmp_path, ENV)
    store.save("c1", 0, 2, batch())
    store.save("c2", 0, 2, batch())
    store.discard("c1")
    assert store.saved("c1") == 0 and store.saved("c2") == 1
    store.discard("c2")
    assert not (tmp_path / "partial").exists()


def command(results: Path, config: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench",
        "--config",
        str(config),
        "--cache-dir",
        str(cache),
        "--results-dir",
        str(results),
        "--defenses",
        "none,bitdepth",
        "--attack",
        "pgd",
        "--limit",
        "48",
        "--batch-size",
        "6",
    ]


def outcomes(results: Path) -> dict[str, tuple]:
    return {
        r["cell_key"]: (
            r["correct"],
            r["adv_acc"],
            r["defended_adv_acc"],
            r["max_linf"],
            r["attack_forward_per_sample"],
        )
        for r in read_records(results)
    }


def test_killed_run_resumes_from_its_batches_with_identical_outcomes(tmp_path, cache_dir):
    """SIGKILL once a few batches are saved; the same command then takes them back and its cells
    equal an uninterrupted run's, image for image."""
    config = tmp_path / "bench.toml"
    config.write_text("[run]\noffline = true\n[attacks.pgd]\nsteps = 40\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        command(killed, config, cache_dir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((killed / "partial").glob("*/*.pt"))) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = len(list((killed / "partial").glob("*/*.pt")))
    assert 3 <= saved < 8 and not read_records(killed)  # killed inside the crafting, nothing stored
    resumed = subprocess.run(command(killed, config, cache_dir), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "batch(es) taken back from an interrupted run" in resumed.stdout
    assert not (killed / "partial").exists()  # every cell that used them is stored
    whole = tmp_path / "whole"
    plain = subprocess.run(command(whole, config, cache_dir), cwd=ROOT, env=env, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-2000:]
    got, want = outcomes(killed), outcomes(whole)
    assert got.keys() == want.keys() and len(got) == 2
    assert got == want
