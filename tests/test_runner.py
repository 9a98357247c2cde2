"""End-to-end runs: records, resume, SIGKILL, determinism, cell identity."""

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import read_records

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = [
    "run_id",
    "dataset",
    "classifier",
    "defense",
    "attack",
    "eps",
    "threat",
    "n",
    "clean_acc",
    "adv_acc",
    "defended_clean_acc",
    "defended_adv_acc",
    "defense_ms_per_sample",
    "classifier_ms_per_sample",
    "attack_ms_per_sample",
    "device",
    "seed",
    "train_source",
    "test_source",
    "n_train",
    "n_test",
]


def test_grid_records_resume_and_rerun(run_args, capsys):
    args = run_args("--defenses", "none", "--attack", "fgsm,pgd", "--eps", "0.1,0.3")
    assert main(args) == 0
    out = capsys.readouterr().out
    recs = [r for r in read_records(run_args.results) if r.kind == "cell"]
    assert len(recs) == 4 and "| mnist" in out
    worst = [r for r in read_records(run_args.results) if r.kind == "worst"]
    assert len(worst) == 2 and all(
        w["defended_adv_acc"] <= min(r["defended_adv_acc"] for r in recs if r["eps"] == w["eps"]) for w in worst
    )
    for r in recs:
        assert all(k in r for k in REQUIRED)
        assert r["n"] == 48 and r["max_linf"] <= r["eps"] + 1e-6
        assert r["adv_acc"] <= r["clean_acc"]
        assert r["defended_adv_acc"] == r["adv_acc"]  # `none` is the identity
    run_dir = next(run_args.results.glob("runs/*"))
    env = json.loads((run_dir / "env.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    assert env["versions"]["torch"] and env["command"][-1] == "0.1,0.3" and cfg["eps"] == [0.1, 0.3]

    assert main(args) == 0  # resume: everything stored already
    assert len(read_records(run_args.results)) == 6
    assert len(list(run_args.results.glob("runs/*"))) == 1
    assert main([*args, "--rerun"]) == 0
    recs = read_records(run_args.results)
    assert len(recs) == 12 and len({r["run_id"] for r in recs}) == 2
    assert (run_args.results / "results.md").is_file()


def test_same_seed_same_accuracies(run_args):
    args = run_args("--defenses", "none", "--attack", "pgd", "--eps", "0.2")
    assert main(args) == 0 and main([*args, "--rerun"]) == 0
    a, b = read_records(run_args.results)
    for k in ("clean_acc", "adv_acc", "defended_clean_acc", "defended_adv_acc"):
        assert a[k] == b[k]
    assert a["correct"] == b["correct"] and a["cell_key"] == b["cell_key"]


def test_cell_identity_covers_limit_and_params(run_args, tmp_path):
    assert main(run_args("--attack", "pgd", "--eps", "0.2")) == 0
    assert main(run_args("--attack", "pgd", "--eps", "0.2", "--limit", "32")) == 0
    (tmp_path / "steps.toml").write_text(
        "[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n[attacks.pgd]\nsteps = 5\n"
    )
    args = run_args("--attack", "pgd", "--eps", "0.2")
    args[args.index("--config") + 1] = str(tmp_path / "steps.toml")
    assert main(args) == 0
    recs = read_records(run_args.results)
    assert len(recs) == 3 and len({r["cell_key"] for r in recs}) == 3
    assert recs[-1]["attack_params"]["steps"] == 5


def test_user_classifier_weights(run_args, mnist_setup, tmp_path):
    from bench.core.checkpoint import save_state

    _, _, clf = mnist_setup
    save_state(clf, tmp_path / "mine.pt")
    assert main(run_args("--classifier-weights", str(tmp_path / "mine.pt"))) == 0
    (rec,) = read_records(run_args.results)
    assert rec["fit"]["classifier_source"] == "user" and rec["clean_acc"] > 0.5


def test_sigkill_then_rerun_stores_every_cell_once(run_args, tmp_path):
    (tmp_path / "kill.toml").write_text(
        "[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n[attacks.pgd]\nsteps = 20\n"
    )
    args = run_args("--defenses", "none", "--attack", "fgsm,pgd", "--eps", "0.05,0.1,0.2,0.3", "--limit", "96")
    args[args.index("--config") + 1] = str(tmp_path / "kill.toml")
    cmd = [sys.executable, "-m", "bench", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and len(read_records(run_args.results)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(read_records(run_args.results))
    assert 2 <= partial < 8
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600).returncode == 0
    recs = read_records(run_args.results)
    counts = Counter((r["attack"], r["eps"]) for r in recs)
    assert len(counts) == 12 and set(counts.values()) == {1}  # 8 cells + 4 worst-case rows
    assert len({r["cell_key"] for r in recs}) == 12
