"""Classifiers: normalisation inside the model, trained on demand and cached by content.

Every classifier takes NCHW images in [0,1] and returns logits. The cache key covers the
dataset, architecture, training recipe, data fingerprint and seed, so a changed recipe or
changed data can never silently reuse old weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.builtin.data import Data, DatasetPlugin
from bench.core import identity
from bench.core.artifacts import load_or_train
from bench.core.checkpoint import load_state, state_hash
from bench.core.errors import BenchError
from bench.core.progress import progress
from bench.core.registry import CLASSIFIERS, register_classifier, typed

# The version of the classifier training code (train_classifier, pgd, reconstructed, the
# architectures, the batch order): part of every classifier's cache key. Bump it whenever the
# same recipe would train different weights; tests/test_training_code.py fails until you do.
TRAINING_VERSION = 1


class Normalized(nn.Module):
    """Base: subtract mean / divide std, then ``self.net``; subclasses build ``net``."""

    example_shape: tuple[int, int, int] = (1, 28, 28)  # an input shape the tests use

    def __init__(self, shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        c, h, w = shape
        self.net = self.build((c, h, w), num_classes)

    def build(self, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    mean: torch.Tensor  # buffers, registered above
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@register_classifier("mnist-cnn")
class ModelA(Normalized):
    """DefenseGAN's model A: Conv64 5×5, Conv64 5×5/2, Dropout .25, FC128, Dropout .5, FC10.

    Input N×1×28×28 in [0,1] (any C×H×W works). Example: ``--classifier mnist-cnn``.
    """

    example_shape = (1, 28, 28)

    def build(self, shape, num_classes):
        c, h, w = shape
        oh, ow = (h - 4 - 5) // 2 + 1, (w - 4 - 5) // 2 + 1
        return nn.Sequential(
            nn.Conv2d(c, 64, 5),
            nn.ReLU(),
            nn.Conv2d(64, 64, 5, stride=2),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(64 * oh * ow, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )


@register_classifier("cifar-small")
class SmallCNN(Normalized):
    """A CPU-friendly CNN for 3×32×32: 3 conv blocks (32/64/128, BN, max-pool), FC 256.

    Example: ``--dataset cifar10 --classifier cifar-small``.
    """

    example_shape = (3, 32, 32)

    def build(self, shape, num_classes):
        c, h, w = shape
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(
            *block(c, 32),
            *block(32, 64),
            *block(64, 128),
            nn.Flatten(),
            nn.Linear(128 * (h // 8) * (w // 8), 256),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )


@register_classifier("cifar-vgg16bn")
class VGG16BN(Normalized):
    """VGG16 with batch norm for 32×32 inputs, as in counterGAN (torchvision's layers, FC 512→10).

    Example: ``--dataset cifar10 --classifier cifar-vgg16bn`` (train on a GPU).
    """

    example_shape = (3, 32, 32)

    def build(self, shape, num_classes):
        from torchvision.models import vgg16_bn

        features = vgg16_bn(weights=None).features
        if shape[0] != 3:
            features[0] = nn.Conv2d(shape[0], 64, 3, padding=1)
        return nn.Sequential(
            features, nn.Flatten(), nn.Dropout(0.5), nn.Linear(512 * (shape[1] // 32) * (shape[2] // 32), num_classes)
        )


@dataclass
class Recipe:
    """How a classifier is trained when no weights are given.

    Precedence (``resolve_recipe``): these defaults < ``[classifier]`` in bench.toml < the
    class's ``recipe_preset`` < ``[classifiers.<name>]``. The ``adv_*`` fields switch on Madry
    et al.'s PGD adversarial training; at their defaults (``adv_eps = 0``) training is standard.
    """

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    adv_eps: float = 0.0  # L∞ radius trained against; 0 = standard training
    adv_steps: int = 0  # PGD steps per batch (random start), needed when adv_eps > 0
    adv_alpha: float = 2.5  # PGD step size in units of eps/steps (Madry et al.'s 2.5·eps/steps)
    adv_ramp_epochs: float = 0.0  # eps grows linearly from 0 to adv_eps over this many epochs
    adv_clean_fraction: float = 0.0  # share of each batch left clean (0 = Madry: all adversarial)
    rec_L: int = 0  # > 0: train on DefenseGAN reconstructions G(z*) of the training
    rec_R: int = 1  # images, rec_L descent steps, rec_R restarts (the paper's "Rec")


def recipe_identity(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields of a classifier's cache key: the rec_* fields only when used, so that
    classifiers cached before they existed keep their keys."""
    return {k: v for k, v in recipe.items() if recipe.get("rec_L", 0) > 0 or not k.startswith("rec_")}


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


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, alpha: float, gen: torch.Generator
) -> torch.Tensor:
    """L∞ PGD from a uniform random start in the eps-ball (Madry et al. 2018), for training.

    ``alpha`` is the step size in units of eps/steps. The start is drawn on the CPU generator
    ``gen`` and then moved, so a seed gives the same numbers on any device.
    """
    start = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
    adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        # Gradient w.r.t. the input only: no weight gradients are computed or accumulated.
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + alpha * eps / steps * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def train_classifier(
    model: nn.Module, data: Data, recipe: Recipe, seed: int, device: torch.device, desc: str = "classifier"
) -> nn.Module:
    """Adam on cross-entropy; with ``recipe.adv_eps > 0`` on PGD examples of each batch."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)  # batch order (as for standard training)
    g_adv = torch.Generator().manual_seed(seed)  # PGD random starts
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    x, y = data.train.x, data.train.y
    n, bs = len(y), recipe.batch_size
    per_epoch = math.ceil(n / bs)
    ramp = recipe.adv_ramp_epochs * per_epoch
    bar = progress(range(recipe.epochs * per_epoch), desc=desc, total=recipe.epochs * per_epoch)
    for it in bar:
        epoch, j = divmod(it, per_epoch)
        if j == 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[j * bs : (j + 1) * bs]
        xb, yb = x[idx].to(device), y[idx].to(device)
        if recipe.adv_eps > 0:
            # eps ramps up from ~0: at the full eps from the first step, model A on MNIST can
            # stall at chance (every input looks adversarial before any feature is learnt).
            eps = recipe.adv_eps * min(1.0, (it + 1) / ramp) if ramp else recipe.adv_eps
            k = round(recipe.adv_clean_fraction * len(idx))  # the first k stay clean
            model.eval()  # craft against the deterministic model (no dropout), as at test time
            xb = torch.cat([xb[:k], pgd(model, xb[k:], yb[k:], eps, recipe.adv_steps, recipe.adv_alpha, g_adv)])
            model.train()
            if j == 0:
                bar.set_postfix(epoch=epoch + 1, eps=f"{eps:.3f}")
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if hasattr(bar, "close"):
        bar.close()
    return model.eval()


def reconstructed(data: Data, fn: Callable, device: torch.device, batch: int = 250) -> Data:
    """``data`` with every training image replaced by ``fn``'s reconstruction (labels kept)."""
    x = data.train.x
    bar = progress(range(0, len(x), batch), desc="reconstructing training images", total=math.ceil(len(x) / batch))
    with torch.no_grad():
        out = torch.cat([fn(x[i : i + batch].to(device)).cpu() for i in bar])
    return replace(data, train=replace(data.train, x=out, source=f"{data.train.source} (reconstructed)"))


def describe(recipe: Recipe, n: int) -> str:
    """One line: what a recipe will do on ``n`` training images (printed before training)."""
    iters = recipe.epochs * math.ceil(n / recipe.batch_size)
    text = f"{recipe.epochs} epochs, {iters} iterations of batch {recipe.batch_size}"
    if recipe.adv_eps > 0:
        text += (
            f", PGD-{recipe.adv_steps} adversarial training at eps {recipe.adv_eps:g}"
            + (f" (ramped over {recipe.adv_ramp_epochs:g} epochs)" if recipe.adv_ramp_epochs else "")
            + (f", {recipe.adv_clean_fraction:.0%} clean" if recipe.adv_clean_fraction else "")
            + f": ~{recipe.adv_steps + 1}× the cost of standard training"
        )
    if recipe.rec_L > 0:
        text += f", on DefenseGAN reconstructions (L = {recipe.rec_L}, R = {recipe.rec_R}) of the training images"
    return text


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


def _typed(table: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check one table's keys and value types against ``Recipe`` (ints may widen to floats)."""
    defaults = {f.name: f.default for f in fields(Recipe)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise BenchError(f"unknown key(s) {', '.join(unknown)} in {table}; valid: {', '.join(defaults)}")
    out = {}
    for k, v in values.items():
        try:
            out[k] = typed(v, defaults[k])  # the registry's rule for every typed setting
        except TypeError as exc:
            raise BenchError(f"{table} {k} must be {exc}, got {v!r}") from None
    return out


def _checked(r: Recipe, table: str) -> Recipe:
    """Ranges, and the adversarial fields' consistency."""
    bad = [(k, "a positive") for k in ("epochs", "batch_size", "lr") if getattr(r, k) <= 0]
    bad += [(k, "a non-negative") for k in ("weight_decay", "adv_steps", "adv_ramp_epochs") if getattr(r, k) < 0]
    bad += [(k, "a non-negative") for k in ("rec_L",) if r.rec_L < 0]
    bad += [(k, "a positive") for k in ("adv_alpha", "rec_R") if getattr(r, k) <= 0]
    if bad:
        k, what = bad[0]
        raise BenchError(f"{table} {k} must be {what} number, got {getattr(r, k)!r}")
    if not 0 <= r.adv_eps <= 1:
        raise BenchError(f"{table} adv_eps must be in [0, 1] (0 = standard training), got {r.adv_eps!r}")
    if not 0 <= r.adv_clean_fraction < 1:
        raise BenchError(f"{table} adv_clean_fraction must be in [0, 1), got {r.adv_clean_fraction!r}")
    if r.adv_eps > 0 and r.adv_steps == 0:
        raise BenchError(f"{table} adv_eps = {r.adv_eps:g} needs adv_steps ≥ 1 (PGD steps per batch)")
    return r


def check_recipe(values: dict, table: str = "[classifier]") -> Recipe:
    """A validated ``Recipe`` from one table of overrides (unknown keys, wrong types → BenchError)."""
    return _checked(Recipe(**_typed(table, values)), table)


def resolve_recipe(name: str, general: dict, specific: dict) -> Recipe:
    """The effective recipe of classifier ``name``: Recipe defaults < ``general`` (``[classifier]``)
    < the class's ``recipe_preset`` < ``specific`` (``[classifiers.<name>]``), each table validated."""
    preset = getattr(CLASSIFIERS.get(name), "recipe_preset", {})
    values = {
        **_typed("[classifier]", general),
        **_typed(f"{name} recipe_preset", preset),
        **_typed(f"[classifiers.{name}]", specific),
    }
    return _checked(Recipe(**values), f"recipe of classifier {name!r} ([classifier], [classifiers.{name}]):")


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
