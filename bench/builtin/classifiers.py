"""Classifiers: built, loaded from the zoo or the cache, or trained on demand and cached by content.

Every classifier takes NCHW images in [0,1] and returns logits. The cache key covers the
dataset, architecture, training recipe, data fingerprint and seed, so a changed recipe or
changed data can never silently reuse old weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.builtin.architectures import VGG16BN, ModelA, Normalized, SmallCNN
from bench.builtin.data import Data, DatasetPlugin
from bench.builtin.recipe import Recipe, check_recipe, describe, recipe_identity, resolve_recipe
from bench.builtin.training import TRAINING_VERSION, reconstructed, train_classifier
from bench.core import identity
from bench.core.artifacts import load_or_train
from bench.core.checkpoint import load_state, state_hash
from bench.core.errors import BenchError
from bench.core.registry import CLASSIFIERS

# What importers of this module used before the split (architectures, recipe, training).
__all__ = [
    "TRAINING_VERSION",
    "VGG16BN",
    "ModelA",
    "Normalized",
    "Recipe",
    "SmallCNN",
    "check_fits",
    "check_recipe",
    "classifier_ident",
    "get_classifier",
    "is_builtin",
    "make_classifier",
    "recipe_identity",
    "resolve_recipe",
    "train_classifier",
]


def is_builtin(name: str) -> bool:
    """A registered architecture (built for the data, trainable here), not a user's ``module:Class``."""
    return issubclass(CLASSIFIERS.get(name), Normalized)


def make_classifier(name: str, spec: DatasetPlugin) -> nn.Module:
    """A registered architecture built for the data's shape, classes and statistics, or a user's
    ``module:Class`` built with no arguments (its normalisation is its own business, inside it)."""
    cls = CLASSIFIERS.get(name)
    if issubclass(cls, Normalized):
        return cls(spec.shape, spec.num_classes, spec.mean, spec.std)
    try:
        model = cls()
    except Exception as exc:  # the user's constructor: any failure is their input, said in one line
        raise BenchError(
            f"classifier {name}: cannot build it without arguments ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, nn.Module):
        raise BenchError(f"classifier {name} is not a torch.nn.Module (got {type(model).__name__})")
    return model


def check_fits(name: str, model: nn.Module, spec: DatasetPlugin, test: Any, device: torch.device) -> None:
    """The model takes the data's images and has one output per class, or one clear error."""
    shape = "×".join(str(d) for d in spec.shape)
    x = test.x[:2].to(device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # a user's forward on the wrong shape fails in many ways
        raise BenchError(
            f"classifier {name} does not take this data's {shape} images in [0,1] "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        raise BenchError(
            f"classifier {name} must return logits N×classes for {shape} images, "
            f"got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    k = out.shape[1]
    if getattr(spec, "classes_known", True):
        if k != spec.num_classes:
            raise BenchError(f"classifier {name} has {k} outputs but the data has {spec.num_classes} classes")
    elif k < spec.num_classes:
        raise BenchError(
            f"classifier {name} has {k} outputs but the data has labels up to {spec.num_classes - 1} "
            f"(at least {spec.num_classes} classes)"
        )
    else:
        spec.num_classes = k  # unnamed classes: the model says how many there are (attacks use it)


def get_classifier(
    name: str,
    spec: DatasetPlugin,
    data: Data,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    cache_dir: Path,
    weights: Path | None = None,
    reconstructor: Callable[[], tuple[Callable, dict]] | None = None,
    retrain: bool = False,
    zoo_dir: Path | None = None,
) -> tuple[nn.Module, dict]:
    """Return (model in eval mode on ``device``, identity info for records).

    Weights come from, in order: ``weights`` (the user's own); the shipped zoo (``bench/zoo``)
    when a model was shipped under exactly this identity; the cache; training (``retrain``
    skips the zoo and the cache and always trains, then caches the result).
    ``reconstructor`` (the Rec setting, ``recipe.rec_L > 0``) returns (a function mapping a batch
    of training images to their reconstructions, that function's identity: which generator, L, R);
    it is called whenever ``recipe.rec_L > 0`` (cached or not) because its identity joins the key.
    """
    torch.manual_seed(seed)  # before the model exists: its initial weights must not depend on hidden RNG state
    model = make_classifier(name, spec)
    if weights is not None:
        load_state(model, weights, what="classifier weights")
        info: dict[str, Any] = {
            "classifier_weights": str(weights),
            "classifier_source": "user",
            "classifier_recipe": None,
            "classifier_key": None,
        }  # the recipe did not make these weights
    else:
        ident = classifier_ident(name, data, recipe, seed)
        rec_fn = None
        if recipe.rec_L > 0:
            if reconstructor is None:
                raise BenchError(
                    f"classifier {name!r} trains on reconstructions (rec_L = {recipe.rec_L}) "
                    "but no reconstructor was given"
                )
            rec_fn, ident["reconstruction"] = reconstructor()
        key = identity.key(ident)
        path = Path(cache_dir) / "classifiers" / f"{data.name}-{name}-{key}.pt"

        def train() -> dict[str, Any]:
            t0 = time.perf_counter()
            print(
                f"[classifier] training {name} on {len(data.train)} {data.name} images: "
                f"{describe(recipe, len(data.train))} …",
                flush=True,
            )
            train_data = reconstructed(data, rec_fn, device) if rec_fn is not None else data
            train_classifier(model, train_data, recipe, seed, device, desc=f"classifier {name}")
            seconds = time.perf_counter() - t0
            print(f"[classifier] {name} trained in {seconds:.0f} s; cached as {path}", flush=True)
            return {"classifier_train_seconds": seconds, "classifier_train_threads": torch.get_num_threads()}

        _, info = load_or_train(
            "classifier", data.name, name, ident, key, model, path, train, retrain=retrain, zoo_dir=zoo_dir
        )
        info.update({"classifier_recipe": asdict(recipe), "classifier_key": key, "classifier_identity": ident})
        if "reconstruction" in ident:
            info["classifier_reconstruction"] = ident["reconstruction"]
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info["classifier_hash"] = state_hash(model)
    return model, info


def classifier_ident(name: str, data: Data, recipe: Recipe, seed: int) -> dict[str, Any]:
    """A classifier's identity before its reconstruction part (the Rec setting adds that)."""
    return identity.classifier_identity(
        data.name, name, recipe_identity(asdict(recipe)), data.fingerprint, seed, TRAINING_VERSION
    )


# Classifier variants are rows of this table: an architecture with another training recipe.
# name → (the class name it had, the architecture, its recipe over the general one, description).
VARIANTS: dict[str, tuple[str, type, dict[str, Any], str]] = {
    "mnist-cnn-pgdat": (
        "ModelAPGDAT",
        ModelA,
        {
            "epochs": 20,
            "batch_size": 64,
            "lr": 1e-3,
            "adv_eps": 0.3,
            "adv_steps": 7,
            "adv_alpha": 2.5,
            "adv_ramp_epochs": 5.0,
        },
        "Model A adversarially trained with PGD (Madry et al. 2018): the robust reference.\n\n"
        "Same architecture as ``mnist-cnn``; only the training differs: every batch is replaced by its L∞ "
        "PGD examples against the current model — 7 steps of 2.5·eps/steps from a random start, eps ramped "
        "from 0 to 0.3 over the first 5 of 20 epochs. Madry et al. train with 40 steps; 7 steps of their "
        "2.5·eps/steps rule still reach the boundary of the ball at 8/41 of the cost, so the recipe fits "
        "≤ 15 minutes on 2 CPU cores on the 4,000 offline training digits. Longer recipes go in bench.toml "
        "and override it, e.g. ``[classifiers.mnist-cnn-pgdat] epochs = 60`` or ``adv_steps = 40``.\n"
        "Example: ``python -m bench --defenses none --classifier mnist-cnn-pgdat --attack pgd --eps 0.1,0.2,0.3``",
    ),
    "mnist-cnn-rec": (
        "ModelARec",
        ModelA,
        {"rec_L": 50, "rec_R": 4},
        'Model A trained on DefenseGAN reconstructions: the paper\'s "Defense-GAN-Rec" classifier.\n\n'
        "Same architecture and recipe as ``mnist-cnn``; every training image is replaced by its "
        "reconstruction G(z*) by the shipped DefenseGAN generator (the paper's z₀ ~ N(0, 1/128), lr 10, "
        "fixed seed), so the classifier sees at training what ``defensegan`` hands it at test time. A "
        "departure, named: reconstructions use L = 50, R = 4 (``defensegan-fast``'s budget; the paper "
        "reconstructs with L = 200, R = 10, ~10× the cost: ``[classifiers.mnist-cnn-rec] rec_L = 200, "
        "rec_R = 10``). Pair it with a DefenseGAN defense; with ``none`` it shows the clean-image cost.\n"
        "Example: ``python -m bench --classifier mnist-cnn-rec --defenses none,defensegan-fast,defensegan "
        "--attack fgsm``",
    ),
}
for _name, (_class, _arch, _recipe, _doc) in VARIANTS.items():
    CLASSIFIERS.variant(
        _name,
        _arch,
        preset=_recipe,
        doc=_doc,
        class_name=_class,
        attr="recipe_preset",
        known={f.name for f in fields(Recipe)},
    )
