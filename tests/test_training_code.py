"""Training code and cache keys move together.

Every classifier and every trainable defense is trained for a few steps on a tiny fixed
fixture; a fingerprint of the resulting weights is compared with the one stored in
``tests/data/training_fingerprints.json`` for the training-code version the code declares
(``bench.builtin.classifiers.TRAINING_VERSION``, a defense class's ``training_version``). Those versions
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

Fingerprints are kept per machine class — CPU vendor, the instruction set ATen runs at, the BLAS and
the numerics mode in force (``bench.core.numerics``) — because a few counterGAN training steps on
another vendor's MKL code path move the weights past 1e-4 with the same instruction set (issue 33:
an AMD EPYC failed against fingerprints from an Intel Xeon, both AVX512). A machine class with no
fingerprints skips, saying how to record them; a version bumped on one class drops the others'
entries for that case (they describe the old code), which then skip until recorded there.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attacks  # noqa: E402,F401
import defenses  # noqa: E402,F401
from bench.builtin import classifiers  # noqa: E402
from bench.builtin.data import MNIST, Data, Split  # noqa: E402
from bench.core.checkpoint import inference_state  # noqa: E402
from bench.core.registry import CLASSIFIERS, DEFENSES, build  # noqa: E402

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
    """What decides the last bits of a CPU training here: vendor/instruction set/BLAS/numerics mode."""
    from bench.core import numerics
    from bench.store.provenance import blas

    return f"{numerics.cpu_vendor()}/{numerics.cpu_capability()}/{blas().split(' ')[0]}/{numerics.mode_in_force()}"


# Fingerprints stored before machine classes, recorded on the references' Intel Xeon (AVX512, MKL).
LEGACY_CLASS = "GenuineIntel/{kernels}/mkl/native"


def stored() -> dict[str, dict]:
    """machine class → case → {"version", "values"}."""
    data = json.loads(STORE.read_text()) if STORE.is_file() else {}
    if "machines" in data:
        return data["machines"]
    legacy = {k: v for k, v in data.items() if not k.startswith("_")}
    return {LEGACY_CLASS.format(kernels=data["_kernels"]): legacy} if legacy else {}


@pytest.mark.parametrize("case", cases())
def test_training_code_matches_its_version(case):
    machines, here = stored(), machine_class()
    version_now = (
        classifiers.TRAINING_VERSION
        if case.startswith("classifier:")
        else DEFENSES.get(case.split(":", 1)[1]).training_version
    )
    recorded_anywhere = [m for m, cases in machines.items() if cases.get(case, {}).get("version") == version_now]
    assert recorded_anywhere, (
        f"no training fingerprint for {case} at training-code version {version_now} on any "
        "machine class: run `python tests/test_training_code.py --update` and commit "
        "tests/data/training_fingerprints.json"
    )
    entry = machines.get(here, {}).get(case)
    if entry is None or entry["version"] != version_now:
        pytest.skip(
            f"{case}: fingerprints are recorded on {', '.join(sorted(recorded_anywhere))}, not on this "
            f"machine class ({here}): the last bits of a training differ across them; "
            "`python tests/test_training_code.py --update` on a clean checkout here records them"
        )
    version, values = compute(case)
    assert version == version_now
    ok = torch.allclose(torch.tensor(values), torch.tensor(entry["values"]), atol=ATOL, rtol=RTOL)
    kind = (
        "bench.builtin.classifiers.TRAINING_VERSION"
        if case.startswith("classifier:")
        else f"{DEFENSES.get(case.split(':', 1)[1]).__name__}.training_version"
    )
    assert ok, (
        f"{case}: the training code now trains different weights from the same settings on this machine "
        f"class ({here}), so old cached and shipped models would be taken for the new code's. Bump {kind} "
        "(it is part of the cache key), then run `python tests/test_training_code.py --update`"
    )


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
    """Record this machine class's fingerprints for new cases and bumped versions; never overwrite
    an unchanged version. A bumped version drops the other classes' entries for that case."""
    machines, here = stored(), machine_class()
    mine = machines.setdefault(here, {})
    for case in cases():
        version, values = compute(case)
        old = mine.get(case)
        if old and old["version"] == version:
            if not torch.allclose(torch.tensor(values), torch.tensor(old["values"]), atol=ATOL, rtol=RTOL):
                print(f"{case}: weights moved but training-code version {version} did not: bump it first")
            continue
        mine[case] = {"version": version, "values": values}
        for other, their in machines.items():
            if other != here and case in their and their[case]["version"] != version:
                print(f"{case}: dropped {other}'s fingerprint of version {their.pop(case)['version']}")
        print(f"{case}: recorded version {version} on {here}")
    STORE.parent.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps({"machines": machines}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_training_code.py --update")
    update()


def test_a_changed_defense_trainer_fails_here_and_another_machine_class_skips(monkeypatch):
    """Issue 33: keyed by machine class, the check still fails on this machine when a trainer
    changes (here: counterGAN's AdamW at 1.5× its learning rate), and a machine class with no
    fingerprints of its own skips with the command that records them instead of failing."""
    import _pytest.outcomes

    if stored().get(machine_class(), {}).get("defense:countergan") is None:
        pytest.skip(f"no fingerprints for this machine class ({machine_class()})")
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **kw: real(params, lr=lr * 1.5, **kw))
    with pytest.raises(AssertionError, match=r"Bump \w+\.training_version"):
        test_training_code_matches_its_version("defense:countergan")
    monkeypatch.setattr(sys.modules[__name__], "machine_class", lambda: "OtherVendor/AVX2/openblas/native")
    with pytest.raises(_pytest.outcomes.Skipped, match="--update"):
        test_training_code_matches_its_version("defense:countergan")
