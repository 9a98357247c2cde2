"""`python -m bench verify`: stored cells recomputed from their identity, bit for bit."""

import json
from pathlib import Path

from conftest import read_records

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_verify_passes_on_a_fresh_grid_and_fails_on_a_planted_change(run_args, capsys):
    assert main(run_args("--defenses", "none,bitdepth", "--attack", "fgsm,pgd", "--eps", "0.2")) == 0
    results = run_args.results
    stored = read_records(results)
    assert any(r.kind == "worst" for r in stored)
    verify = ["verify", "--results-dir", str(results), "--cache-dir", run_args()[3]]
    capsys.readouterr()
    assert main(verify) == 0
    out = capsys.readouterr().out
    assert f"{len(stored)} cell(s): {len(stored)} identical, 0 equivalent" in out

    # Plant a change: one sample of one cell's defended-attacked bitmap flipped.
    path = next(results.glob("runs/*/records.jsonl"))
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    bitmap = bytearray(bytes.fromhex(rec["correct"]["defended_adv"]))
    bitmap[0] ^= 0x80
    rec["correct"]["defended_adv"] = bitmap.hex()
    lines[0] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    assert main([*verify, "--cells", rec["cell_key"][:8]]) == 1
    out = capsys.readouterr().out
    assert f"{rec['cell_key']}" in out and "DIFFERS: defended_adv" in out and "1 of 48 samples differ" in out
    assert not any(p.name != "records.jsonl" and p.suffix == ".jsonl" for p in results.rglob("*"))
    assert len(read_records(results)) == len(stored)  # verify wrote nothing into the results folder

    # Issue 33: a hardware-like difference — the record names another CPU, a few images flipped
    # both ways — is graded equivalent (exit 0); the same flips as a GPU record beyond noise are
    # "not comparable" (exit 3), never reported as a bug.
    i, rec = next(
        (i, json.loads(line))
        for i, line in enumerate(lines)
        if json.loads(line)["attack"] == "pgd" and json.loads(line)["defense"] == "bitdepth"
    )
    bits = bytearray(bytes.fromhex(rec["correct"]["defended_adv"]))
    ones = [j for j in range(48) if bits[j // 8] >> (7 - j % 8) & 1]
    zeros = [j for j in range(48) if not bits[j // 8] >> (7 - j % 8) & 1]
    assert ones and zeros
    for j in (ones[0], zeros[0]):  # one image right → wrong, one wrong → right
        bits[j // 8] ^= 0x80 >> (j % 8)
    planted = dict(
        rec,
        correct=dict(rec["correct"], defended_adv=bits.hex()),
        cpu_vendor="GenuineIntel",
        cpu_model="Intel(R) Xeon(R) Processor",
        cpu_capability="AVX512",
    )
    lines[i] = json.dumps(planted)
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main([*verify, "--cells", rec["cell_key"][:8]]) == 0
    out = capsys.readouterr().out
    assert "equivalent" in out and "2 of 48 samples differ" in out and "cpu vendor GenuineIntel → " in out
    assert "1 cell(s): 0 identical, 1 equivalent" in out
    # a GPU record whose every right image went wrong: beyond noise, on another device
    gone = bytes(len(bits)).hex()
    lines[i] = json.dumps(
        dict(rec, correct=dict(rec["correct"], defended_adv=gone), device="NVIDIA H200", device_type="cuda")
    )
    path.write_text("\n".join(lines) + "\n")
    assert main([*verify, "--cells", rec["cell_key"][:8]]) == 3
    assert "NOT COMPARABLE" in capsys.readouterr().out


def test_verify_sample_takes_the_cheapest_cells(run_args, capsys):
    assert main(run_args("--defenses", "none", "--attack", "fgsm,pgd", "--eps", "0.2")) == 0
    capsys.readouterr()
    assert main(["verify", "--results-dir", str(run_args.results), "--cache-dir", run_args()[3], "--sample", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 cell(s): 1 identical" in out and " fgsm " in out  # FGSM costs less than PGD


def test_verify_bad_input_is_one_line(tmp_path, capsys):
    assert main(["verify", "--results-dir", str(tmp_path / "nope")]) == 2
    assert main(["verify", "--results-dir", str(tmp_path), "--sample", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_suite_rows_are_recombined_from_their_parts_never_recomputed_under_their_name():
    """`aa` now plans the cascade: a stored individual-mode `aa` row (kind worst, attack aa) must be
    checked by recombining its component cells, and never be a cheap "sample" (it has no timing)."""
    from bench.run.verify import combined, parts, select, stored_cells

    records, _ = stored_cells(ROOT / "results" / "reference" / "threat-matrix-aa")
    suite = [r for r in records if r.get("attack") == "aa" and r.get("kind") == "worst"]
    assert suite and all(combined(r) and len(parts(r)) >= 4 for r in suite)
    picked = select(records, 2, None)
    assert not any(r.get("kind") == "worst" for r in picked[:2]) and all(not combined(r) for r in picked)
    by_key = {r["cell_key"]: r for r in select(records, None, [suite[0]["cell_key"]])}
    assert set(parts(suite[0])) <= set(by_key)  # a suite row brings its parts along


def test_a_gpu_record_is_matched_to_its_cpu_recomputation_by_identity_but_device():
    """Issue 29: device_type is part of a cell's identity, so a GPU cell recomputed on a CPU has
    another key; verify pairs them by the rest of the identity and grades the pair (measured on the
    H200's `none` FGSM cell: equivalent, 7 of 1,000 images flipped, exit 0)."""
    from bench.run.verify import other_device

    ident = {"attack": "fgsm", "defense": "none", "n": 8, "device_type": "cuda"}
    gpu = {"cell_key": "g", "identity": ident}
    cpu = {"cell_key": "c", "identity": {**ident, "device_type": "cpu"}}
    other = {"cell_key": "o", "identity": {**ident, "device_type": "cpu", "n": 16}}
    assert other_device(gpu, [other, cpu]) is cpu
    assert other_device(gpu, [other]) is None
    assert other_device(cpu, [gpu]) is None  # a CPU record is recomputed on the CPU, under its own key


def test_square_cell_stored_before_the_standard_schedule_is_recomputed_as_it_ran(tmp_path):
    from bench.core.config import Config
    from bench.run.verify import narrowed

    config = Config(attack=["aa"], defenses=["none"]).to_dict()
    rec = {
        "dataset": "mnist",
        "defense": "none",
        "attack": "aa-square",
        "eps": 0.3,
        "threat": "white",
        "attack_params": {"component": "square", "n_queries": 5000, "restarts": 1, "seed": 0},
    }
    assert narrowed(config, rec, tmp_path).attack_params["aa-square"]["rescale_schedule"] is True
    now = {**rec, "attack_params": {**rec["attack_params"], "rescale_schedule": False}}
    assert "aa-square" not in narrowed(config, now, tmp_path).attack_params
