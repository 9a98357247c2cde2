"""Defense base class: an ``nn.Module`` that maps images in [0,1] to images in [0,1]."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Defense(nn.Module):
    """Base for defense plugins.

    Contract: ``forward(x)`` takes NCHW float in [0,1] and returns the same shape in [0,1].
    Hyperparameters are keyword-only constructor arguments with defaults (``bench.toml``
    ``[defenses.<name>]`` and the CLI override them).

    Life cycle, driven by the runner:
      1. ``setup(spec)`` — build networks for the dataset (``spec.shape``, ``spec.num_classes``).
      2. If ``trainable``: load the cached state dict, or ``fit(train, classifier, ...)`` and
         cache it. The cache key covers the hyperparameters, the classifier weights, the data.
      3. ``forward`` under ``torch.no_grad`` for gray-box cells.

    Set ``randomized = True`` when two calls on one input may differ; ``seed(s)`` must then
    make the next call reproducible.
    """

    randomized = False
    trainable = False
    # True only for a defense whose output *is* its input (``none``): the runner then reuses the
    # undefended predictions. An explicit flag, never object identity: a defense that works in
    # place also returns its input object.
    identity = False
    # False for a defense without useful gradients (JPEG): the white-box threat then attacks
    # it through BPDA, and the record says so (``threat_effective``).
    differentiable = True
    # Small hyperparameters that keep the automatic plugin tests fast (tests/test_plugins.py).
    test_params: ClassVar[dict[str, Any]] = {}
    # Hyperparameters that change what ``fit`` learns (None = all): the training cache is keyed
    # by these, so variants differing only at inference share one trained model.
    fit_params: tuple[str, ...] | None = None
    # The version of this class's training code, part of its fit key: bump it whenever ``fit``
    # (or anything it calls: networks, losses, data order) would train different weights from
    # the same settings, so that old cached or shipped weights are never taken for new ones.
    # tests/test_training_code.py trains every trainable plugin on a tiny fixture and fails
    # until the bump when the result moved.
    training_version = 1
    # State-dict prefixes only training needs (a GAN's discriminator): not shipped, not hashed.
    training_only: tuple[str, ...] = ()
    # Set on the object by the harness, never by the plugin (declared, not assigned, so the
    # runner's reads are type-checked and nothing changes at run time): the dataset spec given to
    # ``setup``; the constructor's arguments as built (the registry); the name it was built under.
    # Where its weights came from is the runner's (bench.run.plan.Fit), never written on the plugin.
    spec: Any
    hparams: dict[str, Any]
    registered_name: str

    def setup(self, spec: Any) -> None:
        self.spec = spec

    def train_plan(self, n_train: int) -> str | None:
        """What training on ``n_train`` images will do, for the runner's progress line (None: nothing to say)."""
        return None

    def fit(self, train: Any, classifier: nn.Module, *, device: torch.device, seed: int, eps: float) -> dict[str, Any]:
        """Train on ``train`` (a ``bench.builtin.data.Split``); returns facts to store (e.g. seconds)."""
        return {}

    def load_pretrained(self, data: Any) -> dict[str, Any] | None:
        """Load shipped weights that fit ``data`` (a ``bench.builtin.data.Data``) instead of training.

        Return facts to record (must include ``defense_source``) when weights were loaded,
        None otherwise. Called by the runner when the zoo (bench/zoo) has no fitting model, before
        the cache and ``fit`` (``--retrain`` skips the zoo and the cache, not this).
        """
        return None

    @property
    def rng(self) -> torch.Generator:
        """This defense's own random stream: a CPU ``torch.Generator``, drawn from afresh until
        ``seed`` fixes it, so a seed gives the same draws on any device and nothing else's stream
        is touched. The base class pickles it with the object (its state: a generator does not
        pickle), so an executor that ships the defense to a worker ships where its stream stands."""
        gen = self.__dict__.get("_rng")
        if gen is None:
            gen = torch.Generator()
            gen.seed()  # unpredictable until seed() is called
            self.__dict__["_rng"] = gen
        return gen

    def seed(self, seed: int) -> None:
        """Fix the randomness of the next forward calls (``rng``); a deterministic defense ignores it."""
        if self.randomized or "_rng" in self.__dict__:
            self.rng.manual_seed(seed)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(state.get("_rng"), torch.Generator):
            state["_rng"] = state["_rng"].get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        rng = state.pop("_rng", None)
        super().__setstate__(state)
        if rng is not None:
            gen = torch.Generator()
            gen.set_state(rng)
            self.__dict__["_rng"] = gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
