"""Training code and cache keys move together.

Every classifier and every trainable defense is trained for a few steps on a tiny fixed
fixture; a fingerprint of the resulting weights is compared with the one stored in
``tests/data/training_fingerprints.json`` for the training-code version the code declares
(``bench.builtin.training.TRAINING_VERSION``, a defense class's ``training_version``). Those versions
are part of every classifier and fit key, so:

* changed training code that trains the same weights (a refactor) keeps every key;
* changed training code that trains other weights fails here until its version is bumped —
  which changes its keys, so no cached or shipped model is ever taken for the new code's;
* after a bump, ``python tests/test_training_code.py --update`` records the new fingerprint (it
  refuses to overwrite one whose version did not change).

Why a fingerprint with a tolerance rather than a hash of the weights or of the source: a hash of
the source changes with every harmless edit (and misses the code it calls: networks, losses,
data order); an exact hash of trained weights differs in the last bits between CPU instruction
sets. A few optimiser steps amplify no float noise past 1e-4 on one machine, while any real change
(a loss, a learning rate, a batch order, an initialisation) moves the weights by far more.

Fingerprints are computed under the portable numerics mode (``bench.core.numerics``: ATen and
oneDNN capped at AVX2, ``MKL_CBWR=COMPATIBLE``), in a child process, since those settings only count
when set before torch is imported. Native numerics would need fingerprints per machine class: a few
counterGAN steps on AMD's MKL path moved the weights past 1e-4 with the same AVX-512 kernels as an
Intel Xeon (issue 33), and a machine class with none recorded skipped (issue 38: every AVX2-only
machine). Under the portable mode one recorded set holds on any x86-64 with AVX2 (AMD or Intel,
AVX2 or AVX-512); a machine where the mode cannot be in force (not x86, or no AVX2) skips, saying
why. The set is kept under its class (architecture/instruction set/BLAS/mode) so a torch built on
another BLAS records its own rather than failing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attacks  # noqa: F401
import defenses  # noqa: F401
from bench.builtin import classifiers
from bench.builtin.data import MNIST, Data, Split
from bench.core.checkpoint import inference_state
from bench.core.registry import CLASSIFIERS, DEFENSES, build

STORE = Path(__file__).resolve().parent / "data" / "training_fingerprints.json"
ATOL, RTOL = 1e-4, 1e-3


def fixture(shape: tuple[int, int, int], n: int = 16) -> Data:
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(n, *shape, generator=g)
    y = torch.arange(n) % 10
    split = Split(x, y, "fixture")
    return Data("fixture", split, split, "fixture")


def fingerprint(module: torch.nn.Module, ignore: tuple[str, ...] = ()) -> list[float]:
    """16 evenly spaced weights, their sum and their absolute sum."""
    flat = torch.cat(
        [v.flatten().double() for _, v in sorted(inference_state(module, ignore).items()) if v.is_floating_point()]
    )
    idx = torch.linspace(0, len(flat) - 1, 16).long()
    return [*flat[idx].tolist(), flat.sum().item(), flat.abs().sum().item()]


def spec_for(shape: tuple[int, int, int]) -> MNIST:
    spec = MNIST()
    spec.shape = shape
    spec.mean, spec.std = (0.5,) * shape[0], (0.25,) * shape[0]
    return spec


def tiny_recipe(name: str) -> classifiers.Recipe:
    """The class's own recipe kind (standard, adversarial, on reconstructions), a few steps."""
    r = classifiers.resolve_recipe(name, {}, {})
    r = replace(r, epochs=1, batch_size=8)
    if r.adv_eps > 0:
        r = replace(r, adv_steps=2, adv_ramp_epochs=0.5)
    if r.rec_L > 0:
        r = replace(r, rec_L=2, rec_R=2)
    return r


def train_classifier_case(name: str) -> tuple[int, list[float]]:
    cls = CLASSIFIERS.get(name)
    shape = tuple(cls.example_shape)
    spec, data = spec_for(shape), fixture(shape)
    recipe = tiny_recipe(name)
    if recipe.rec_L > 0:  # the Rec path: reconstruct the training images with a tiny DefenseGAN
        torch.manual_seed(0)
        d = build(
            DEFENSES, "defensegan", {"L": recipe.rec_L, "R": recipe.rec_R, "width": 8, "pretrained": "", "seed": 0}
        )
        d.setup(spec)
        data = classifiers.reconstructed(data, d.eval(), torch.device("cpu"), batch=16)
    torch.manual_seed(0)
    model = cls(shape, 10, spec.mean, spec.std)
    classifiers.train_classifier(model, data, recipe, 0, torch.device("cpu"))
    return classifiers.TRAINING_VERSION, fingerprint(model)


def train_defense_case(name: str) -> tuple[int, list[float]]:
    cls = DEFENSES.get(name)
    shape = (1, 28, 28)
    spec, data = spec_for(shape), fixture(shape)
    torch.manual_seed(0)
    clf = classifiers.ModelA(shape, 10, spec.mean, spec.std).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    params = {**cls.test_params}
    if "batch_size" in params:
        params["batch_size"] = 16
    torch.manual_seed(0)
    d = build(DEFENSES, name, params)
    d.setup(spec)
    d.train()
    d.fit(data.train, clf, device=torch.device("cpu"), seed=0, eps=0.3)
    return d.training_version, fingerprint(d, d.training_only)


def cases() -> list[str]:
    trainable = [n for n in DEFENSES.names() if DEFENSES.get(n).trainable]
    return [f"classifier:{n}" for n in CLASSIFIERS.names()] + [f"defense:{n}" for n in trainable]


def compute(case: str) -> tuple[int, list[float]]:
    """One thread: a CPU training split over another number of threads rounds differently, and
    Adam turns last-bit noise in near-zero gradients into full-size steps."""
    kind, name = case.split(":", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_classifier_case(name) if kind == "classifier" else train_defense_case(name)
    finally:
        torch.set_num_threads(before)


def machine_class() -> str:
    """What decides the last bits of a CPU training here: instruction set/BLAS/numerics mode, and the
    CPU vendor unless the portable mode is in force (``MKL_CBWR=COMPATIBLE`` takes one MKL code path
    on every vendor; ATen and oneDNN dispatch by instruction set only)."""
    from bench.core import numerics
    from bench.store.provenance import blas

    mode = numerics.mode_in_force()
    who = "x86-64" if mode == "portable" else numerics.cpu_vendor()
    return f"{who}/{numerics.cpu_capability()}/{blas().split(' ')[0]}/{mode}"


def stored() -> dict[str, dict]:
    """machine class → case → {"version", "values"}."""
    data = json.loads(STORE.read_text()) if STORE.is_file() else {}
    return data.get("machines", {})


def _adamw_lr() -> None:
    real = torch.optim.AdamW
    torch.optim.AdamW = lambda params, lr, **kw: real(params, lr=lr * 1.5, **kw)  # type: ignore[misc]


# Changes a child makes to the training code before training (the test of the test: a changed
# trainer must fail), by name: a child process cannot be monkeypatched from here.
PATCHES = {"adamw-lr": _adamw_lr}


def portable_skip_reason() -> str | None:
    """Why the portable mode cannot be in force here (None: it can)."""
    arch = platform.machine().lower()
    if arch not in ("x86_64", "amd64"):
        return (
            f"training fingerprints are recorded under the portable numerics mode, which pins x86-64 "
            f"instruction sets; this machine is {platform.machine() or 'of an unknown architecture'}"
        )
    return None


def compute_portable(cases_: list[str], patch: str | None = None) -> tuple[str, dict[str, tuple[int, list[float]]]]:
    """(machine class, case → (version, fingerprint)) from a child process under the portable
    numerics mode (its settings only count before torch is imported, which this process did)."""
    from bench.core import numerics

    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}
    numerics.apply("portable", env)
    argv = [sys.executable, str(Path(__file__).resolve()), "--compute", *cases_]
    res = subprocess.run(argv + (["--patch", patch] if patch else []), env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"the portable child failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["machine"], {c: (v, values) for c, (v, values) in out["cases"].items()}


def portable_fingerprints() -> tuple[str, dict[str, tuple[int, list[float]]]] | str:
    """Every case's fingerprint, computed in one portable child (~15 s), with the machine class it
    was computed under; or why the portable mode cannot be in force on this machine."""
    reason = portable_skip_reason()
    if reason:
        return reason
    here, computed = compute_portable(cases())
    if not here.endswith("/portable"):
        return f"the portable numerics mode is not in force on this CPU ({here}): it needs AVX2"
    return here, computed


@pytest.fixture(scope="module")
def portable() -> tuple[str, dict[str, tuple[int, list[float]]]]:
    """Every case's fingerprint, computed once per test process."""
    got = portable_fingerprints()
    if isinstance(got, str):
        pytest.skip(got)
    return got


def version_now(case: str) -> int:
    return (
        classifiers.TRAINING_VERSION
        if case.startswith("classifier:")
        else DEFENSES.get(case.split(":", 1)[1]).training_version
    )


def check(case: str, here: str, version: int, values: list[float]) -> None:
    """Fail unless ``values`` match the fingerprint recorded for ``case`` at its version on ``here``."""
    assert version == version_now(case)
    entry = stored().get(here, {}).get(case)
    assert entry is not None and entry["version"] == version, (
        f"no training fingerprint for {case} at training-code version {version} on {here}: run "
        "`python tests/test_training_code.py --update` and commit tests/data/training_fingerprints.json"
    )
    ok = torch.allclose(torch.tensor(values), torch.tensor(entry["values"]), atol=ATOL, rtol=RTOL)
    kind = (
        "bench.builtin.training.TRAINING_VERSION"
        if case.startswith("classifier:")
        else f"{DEFENSES.get(case.split(':', 1)[1]).__name__}.training_version"
    )
    assert ok, (
        f"{case}: the training code now trains different weights from the same settings ({here}), so "
        f"old cached and shipped models would be taken for the new code's. Bump {kind} (it is part of "
        "the cache key), then run `python tests/test_training_code.py --update`"
    )


@pytest.mark.parametrize("case", cases())
def test_training_code_matches_its_version(case, portable):
    here, computed = portable
    check(case, here, *computed[case])


def test_a_changed_training_path_changes_the_key():
    """The mechanism end to end: the version is in the key, so a bump gives a new key."""
    from bench.core import identity
    from bench.run.plan import fit_key

    spec = spec_for((1, 28, 28))
    d = build(DEFENSES, "countergan", {})
    d.setup(spec)
    before = fit_key(d, "clf", "data", 0)
    d.training_version += 1
    assert fit_key(d, "clf", "data", 0) != before
    a = identity.classifier_identity("mnist", "mnist-cnn", {}, "data", 0, 1)
    b = identity.classifier_identity("mnist", "mnist-cnn", {}, "data", 0, 2)
    assert identity.key(a) != identity.key(b)


def test_the_fingerprint_sees_a_changed_training_step(monkeypatch):
    """A real change of the training code (here: a different Adam learning rate inside
    train_classifier) moves the fingerprint past the tolerance."""
    _, before = train_classifier_case("mnist-cnn")
    real = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr, **kw: real(params, lr=lr * 1.5, **kw))
    _, after = train_classifier_case("mnist-cnn")
    assert not torch.allclose(torch.tensor(before), torch.tensor(after), atol=ATOL, rtol=RTOL)


def update() -> None:
    """Record the portable fingerprints of new cases and bumped versions; never overwrite an
    unchanged version (a moved fingerprint there needs a bump first)."""
    got = portable_fingerprints()
    if isinstance(got, str):
        sys.exit(got)
    here, computed = got
    machines = stored()
    mine = machines.setdefault(here, {})
    for case, (version, values) in computed.items():
        old = mine.get(case)
        if old and old["version"] == version:
            if not torch.allclose(torch.tensor(values), torch.tensor(old["values"]), atol=ATOL, rtol=RTOL):
                print(f"{case}: weights moved but training-code version {version} did not: bump it first")
            continue
        mine[case] = {"version": version, "values": values}
        print(f"{case}: recorded version {version} on {here}")
    STORE.parent.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps({"machines": machines}, indent=1, sort_keys=True) + "\n")


def child(argv: list[str]) -> None:
    """``--compute CASE… [--patch NAME]``: print one JSON line of fingerprints (run by
    ``compute_portable`` in a child process with the portable settings in its environment)."""
    patch = None
    if "--patch" in argv:
        i = argv.index("--patch")
        patch, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    if patch:
        PATCHES[patch]()
    out = {"machine": machine_class(), "cases": {c: compute(c) for c in argv}}
    print(json.dumps(out))


def test_a_changed_defense_trainer_fails_under_the_portable_mode(portable):
    """Issue 33 and 38: under the portable mode a changed trainer (here: counterGAN's AdamW at 1.5×
    its learning rate) still fails, on any x86 with AVX2."""
    here, computed = portable
    check("defense:countergan", here, *computed["defense:countergan"])
    patched_here, changed = compute_portable(["defense:countergan"], patch="adamw-lr")
    assert patched_here == here
    with pytest.raises(AssertionError, match=r"Bump \w+\.training_version"):
        check("defense:countergan", here, *changed["defense:countergan"])


def test_one_recorded_set_for_every_x86_with_avx2_and_a_reason_elsewhere(monkeypatch):
    """The portable class names no vendor, so AMD and Intel machines meet the same fingerprints; a
    machine that cannot run the mode skips saying why, never in silence."""
    assert list(stored()) == ["x86-64/AVX2/mkl/portable"]
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert "pins x86-64 instruction sets; this machine is aarch64" in (portable_skip_reason() or "")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert portable_skip_reason() is None


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compute"]:
        child(sys.argv[2:])
    elif sys.argv[1:] == ["--update"]:
        update()
    else:
        sys.exit("usage: python tests/test_training_code.py --update")
