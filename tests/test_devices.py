"""bench.render.devices and ``report --devices``: CPU beside GPU, from stored measurements only."""

import json

import pytest

from bench.analysis.frame import frame
from bench.cli import main
from bench.render import devices as dv

CPU = {"device_type": "cpu", "device": "cpu (x86_64, 2 threads)", "cpu_model": "Xeon", "torch_threads": 2}
GPU = {"device_type": "cuda", "device": "NVIDIA H200", "gpu": "NVIDIA H200", "torch_threads": 16}


def cell(defense, ms, on, run="r1", n=100, classifier="m", acc=0.5, t=1.0, params=None):
    ident = {
        "kind": "cell",
        "data": {"dataset": "mnist", "fingerprint": "f"},
        "classifier": classifier,
        "classifier_hash": "c",
        "defense": defense,
        "defense_params": params or {},
        "attack": "fgsm",
        "attack_params": {},
        "eps": 0.3,
        "threat": "gray",
        "n": n,
        "device_type": on["device_type"],
    }
    return {
        "kind": "cell",
        "cell_key": f"{defense}-{on['device_type']}-{run}-{n}-{classifier}",
        "identity": ident,
        "dataset": "mnist",
        "classifier": classifier,
        "defense": defense,
        "defense_params": params or {},
        "attack": "fgsm",
        "eps": 0.3,
        "threat": "gray",
        "n": n,
        "clean_acc": 1.0,
        "adv_acc": 0.1,
        "defended_clean_acc": 1.0,
        "defended_adv_acc": acc,
        "defense_ms_per_sample": ms,
        "run_id": run,
        "time": t,
        **on,
    }


def test_timing_pairs_each_cell_with_its_twin_on_the_other_device():
    cpu = frame([cell("jpeg", 0.2, CPU, acc=0.13), cell("countergan", 0.3, CPU), cell("median", 0.1, CPU)])
    gpu = frame(
        [cell("jpeg", 0.1, GPU, acc=0.12), cell("countergan", 0.003, GPU), cell("median", 0.01, GPU, n=50)]
    )  # another n: another cell, no twin
    ((title, t),) = dv.timing(cpu, gpu, ("cpu", "gpu"))
    assert "mnist · m · fgsm ε = 0.3 · gray-box, the first 100 test images" in title
    assert "CPU, 2 threads (Xeon) beside NVIDIA H200" in title
    assert list(t["defense"]) == ["countergan", "jpeg"]
    jpeg = t.set_index("defense").loc["jpeg"]
    assert jpeg["ms/sample on CPU, 2 threads (Xeon)"] == "0.2" and jpeg["ms/sample on NVIDIA H200"] == "0.1"
    assert jpeg["speed-up"] == "2×" and jpeg["defended accuracy"] == "0.130 / 0.120"
    assert t.set_index("defense").loc["countergan", "speed-up"] == "100×"


def test_timing_wants_one_device_per_folder():
    cpu = frame([cell("jpeg", 0.2, CPU)])
    with pytest.raises(Exception, match="one folder per device"):
        dv.timing(cpu, frame([cell("jpeg", 0.1, CPU, run="r2")]), ("a", "b"))
    with pytest.raises(Exception, match="one folder per device"):
        dv.timing(frame([cell("jpeg", 0.2, CPU), cell("median", 0.1, GPU)]), cpu, ("a", "b"))


def test_pairs_prefer_one_run_and_say_when_they_join_two():
    rerun = dict(
        cell("countergan", 0.001, GPU, run="h", t=9.0), cell_key=cell("countergan", 0, GPU, run="g")["cell_key"]
    )
    gpu = frame(
        [
            cell("defensegan", 1.2, GPU, run="g", params={"L": 200, "R": 10}),
            cell("countergan", 0.006, GPU, run="g"),
            rerun,
        ]
    )  # the same cell recomputed later (--rerun): one row per identity, the latest
    cpu = frame([cell("defensegan", 600.0, CPU, run="c1", params={"L": 200, "R": 10})])
    cpu_b = frame([cell("countergan", 0.6, CPU, run="c2"), cell("countergan", 0.1, CPU, run="c3", classifier="other")])
    t = dv.pairs({"gpu": gpu, "cpu": cpu, "cpu-b": cpu_b})
    assert list(t["device"]) == ["CPU, 2 threads (Xeon)", "NVIDIA H200"]  # CPUs first
    c, g = t.iloc[0], t.iloc[1]
    assert c["ratio"] == "1000×" and c["defensegan ms/sample"] == "600 (L = 200, R = 10)"
    assert c["measured"] == "not side by side: two runs (cpu, run c1; cpu-b, run c2)"
    # run h's countergan replaced run g's: the pair now joins two runs, and says so
    assert g["measured"].startswith("not side by side") and g["ratio"] == "1200×"
    one = dv.pairs({"gpu": frame([cell("defensegan", 1.2, GPU, run="g"), cell("countergan", 0.006, GPU, run="g")])})
    assert one.iloc[0]["measured"] == "side by side, one run (gpu, run g)" and one.iloc[0]["ratio"] == "200×"
    assert dv.pairs({"cpu": cpu}).empty  # no counterGAN on the same images


def test_reconstruction_table_shows_each_variant_with_its_speed_up_and_what_was_skipped(tmp_path):
    base = {"L": 200, "R": 10, "batch": 256, "device": "NVIDIA H200", "torch": "2.11", "compile_backend": "inductor"}
    lines = [
        dict(base, width=16, variant="eager", status="ok", ms_per_sample=1.2, runs=[1.2, 1.3, 1.1]),
        dict(base, width=16, variant="graphs", status="ok", ms_per_sample=0.6, runs=[0.6, 0.6, 0.6]),
        dict(base, width=16, variant="floor", status="ok", ms_per_sample=1.5, runs=[1.5, 1.5, 1.5]),
        dict(base, width=64, variant="eager", status="ok", ms_per_sample=2.0, runs=[2.0, 2.0, 2.0]),
        dict(base, width=64, variant="graphs", status="skipped", note="budget gone"),
    ]
    path = tmp_path / dv.RECONSTRUCTION
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"torn": ')
    title, t = dv.reconstruction(dv.read_reconstruction(path))
    assert "L = 200, R = 10, batch 256) on NVIDIA H200, torch 2.11" in title and "median of 3 timed calls" in title
    assert list(t.columns) == ["generator width", "eager", "CUDA graphs", "floor"]
    w16, w64 = t.iloc[0], t.iloc[1]
    assert w16["eager"] == "1.2" and w16["CUDA graphs"] == "0.6 (2.00×)" and w16["floor"] == "1.5 (0.80×)"
    assert w64["CUDA graphs"] == "— (skipped: budget gone)" and w64["floor"] == "—"


def write_run(folder, run, records):
    d = folder / "runs" / run
    d.mkdir(parents=True)
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (d / "env.json").write_text(json.dumps({"git_commit": None}))


def test_report_devices_fills_the_readme_block(tmp_path, capsys):
    cpu, gpu, extra = tmp_path / "cpu", tmp_path / "gpu", tmp_path / "recon"
    write_run(cpu, "c1", [cell("countergan", 0.3, CPU, run="c1"), cell("defensegan", 30.0, CPU, run="c1")])
    write_run(gpu, "g1", [cell("countergan", 0.003, GPU, run="g1"), cell("defensegan", 0.3, GPU, run="g1")])
    extra.mkdir()
    (extra / dv.RECONSTRUCTION).write_text(
        json.dumps({"width": 16, "variant": "eager", "status": "ok", "ms_per_sample": 1.0, "device": "NVIDIA H200"})
        + "\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- devices:start -->\nstale table\n<!-- devices:end -->\nrest\n")
    args = ["report", "--readme", str(readme), "--devices", f"{cpu},{gpu}", "--devices-from", str(extra)]
    assert main(args) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "stale table" not in text
    assert f"--devices {cpu},{gpu} --devices-from {extra}`" in text
    assert "100×" in text  # countergan: 0.3 ms on the CPU, 0.003 on the GPU
    assert "side by side, one run" in text and "DefenseGAN's reconstruction" in text
    first = text
    assert main(args) == 0 and readme.read_text() == first  # byte for byte
    capsys.readouterr()
    assert main(["report", "--devices", f"{cpu},{gpu}"]) == 2  # needs --readme
    assert main(["report", "--readme", str(readme), "--devices", str(cpu)]) == 2  # two folders
    assert main(["report", "--readme", str(readme), "--devices-from", str(extra)]) == 2  # without --devices
    readme.write_text("no block\n")
    assert main(args) == 2


def test_the_readme_devices_block_is_what_todays_code_makes_of_the_committed_records(tmp_path, monkeypatch):
    """docs/results/devices.md's GPU and CPU block is generated: rerun the command it names (into a copy) and compare."""
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "results" / "devices.md").read_text()
    block = text.split("<!-- devices:start -->", 1)[1].split("<!-- devices:end -->", 1)[0]
    args = shlex.split(re.search(r"_Generated by `python -m bench (report [^`]*)`", block).group(1))
    copy = tmp_path / "README.md"
    copy.write_text(text)
    args[args.index("--readme") + 1] = str(copy)
    monkeypatch.chdir(root)
    assert main(args) == 0
    again = copy.read_text().split("<!-- devices:start -->", 1)[1].split("<!-- devices:end -->", 1)[0]
    assert again.replace(str(copy), "docs/results/devices.md") == block
