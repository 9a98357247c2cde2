"""Preparing a run's models: its classifier (the target, or a transfer threat's surrogate) and each
defense, built, set up, checked against the data, and loaded or trained through the one ladder
(``bench.core.artifacts.load_or_train``: the shipped zoo, a plugin's own weights, the cache,
training). The driver plans, executes and stores; this is where models come from.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from bench.builtin.classifiers import Recipe, check_fits, get_classifier, is_builtin, resolve_recipe
from bench.builtin.data import Data, DatasetPlugin
from bench.core import identity
from bench.core.artifacts import load_or_train
from bench.core.checkpoint import state_hash
from bench.core.config import Config
from bench.core.errors import BenchError
from bench.core.registry import CLASSIFIERS
from bench.run.plan import Fit, fit_ident, make_defense, object_params
from defenses.base import Defense


class Models:
    """The models of one run: ``classifier_object`` and ``defense_objects`` are those a library
    caller handed over (``bench.evaluate``), used as they are (copies)."""

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        classifier_object: torch.nn.Module | None = None,
        defense_objects: dict[str, Defense] | None = None,
    ) -> None:
        self.cfg, self.device = cfg, device
        self.classifier_object = classifier_object
        self.defense_objects = dict(defense_objects or {})

    def surrogate_for(
        self, name: str, seed: int | None, spec: DatasetPlugin, data: Data
    ) -> tuple[torch.nn.Module, str]:
        """A transfer threat's surrogate: a registered classifier on the same data, from the zoo, the
        cache or trained with its recipe (and ``seed``, the run's when None), as the target would
        be; (model, weights hash)."""
        if not is_builtin(name):
            raise BenchError(
                f"transfer:{name}: the surrogate must be a registered classifier "
                f"(available: {', '.join(CLASSIFIERS.names())})"
            )
        if len(data.train) == 0:
            raise BenchError(f"transfer:{name}: dataset {data.name} has no train split to train the surrogate on")
        model, info = self.named_classifier(name, spec, data, None, seed)
        print(
            f"[threat] transfer:{name}"
            + (f"@seed={seed}" if seed is not None else "")
            + f": surrogate weights {info['classifier_hash']} ({info['classifier_source']})"
        )
        return model, info["classifier_hash"]

    def named_classifier(
        self, name: str, spec: DatasetPlugin, data: Data, weights: Path | None, seed: int | None = None
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """A classifier by name with its recipe (the zoo, the cache, training, or ``weights``), checked
        against the data: the target's and a transfer surrogate's alike."""
        cfg = self.cfg
        recipe = resolve_recipe(name, cfg.classifier_recipe, cfg.classifier_recipes.get(name, {}))
        model, info = get_classifier(
            name,
            spec,
            data,
            recipe,
            cfg.seed if seed is None else seed,
            self.device,
            Path(cfg.cache_dir),
            weights,
            reconstructor=lambda: self.reconstructor(recipe, spec, data),
            retrain=cfg.retrain,
        )
        check_fits(name, model, spec, data.test, self.device)
        return model, info

    def classifier_for(self, spec: DatasetPlugin, data: Data) -> tuple[torch.nn.Module, dict[str, Any]]:
        cfg = self.cfg
        name = cfg.classifier or spec.default_classifier
        weights = Path(cfg.classifier_weights) if cfg.classifier_weights else None
        if self.classifier_object is not None:
            # A copy: the run freezes and moves its classifier; the caller's model stays as it was.
            model = copy.deepcopy(self.classifier_object).to(self.device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            info = {
                "classifier_source": "object",
                "classifier_recipe": None,
                "classifier_key": None,
                "classifier_hash": state_hash(model),
            }
            check_fits(name, model, spec, data.test, self.device)
            return model, info
        if weights is None and not is_builtin(name):
            raise BenchError(
                f"classifier {name} is not a registered architecture: give its trained weights "
                "with --classifier-weights (defense-bench trains only its registered ones)"
            )
        if weights is None and len(data.train) == 0:
            raise BenchError(
                f"dataset {data.name} has no train split to train classifier {name} on: give "
                "--classifier-weights, or a train split (train/ and test/ folders, x_train/y_train)"
            )
        return self.named_classifier(name, spec, data, weights)

    def reconstructor(self, recipe: Recipe, spec: DatasetPlugin, data: Data) -> tuple[Any, dict[str, Any]]:
        """The Rec setting's training transform: ``defensegan`` (the shipped generator when it fits,
        else trained on demand) with the recipe's L and R and a fixed seed, and its identity."""
        d = make_defense("defensegan", {"L": recipe.rec_L, "R": recipe.rec_R, "seed": self.cfg.seed})
        torch.manual_seed(self.cfg.seed)
        d.setup(spec)
        # The generator never sees a classifier: its cache key names none.
        fit = self.ensure_fitted(
            d, "defensegan", None, data, spec, fit_ident(d, "none", data.fingerprint, self.cfg.seed)
        )
        # Every hyperparameter: a changed default (momentum, optimizer, lr_cut …) is a new classifier.
        ident = {"defense": "defensegan", "generator": fit.facts["defense_weights_hash"], **d.hparams}
        return d, ident

    def build_defense(self, name: str, spec: DatasetPlugin) -> Defense:
        if name in self.defense_objects:  # handed over by a library caller: a copy, set up if it is not yet
            d = copy.deepcopy(self.defense_objects[name])
            if getattr(d, "spec", None) is None:
                torch.manual_seed(self.cfg.seed)
                d.setup(spec)
            if not hasattr(d, "hparams"):  # built by hand, not by the registry: its arguments as it holds them
                d.hparams = object_params(d)
            return d
        d = make_defense(name, self.cfg.defense_params.get(name))
        # Seeded before its networks exist, so its initial weights do not depend on what else
        # the grid built first (the same flags give the same checkpoint).
        torch.manual_seed(self.cfg.seed)
        d.setup(spec)
        return d

    def trained_defense(self, spec: DatasetPlugin, name: str) -> tuple[Defense, torch.nn.Module, Data]:
        """One defense of the config, loaded or trained, with its classifier and data (perf scripts)."""
        data = spec.load(Path(self.cfg.data_root), self.cfg.offline)
        classifier, info = self.classifier_for(spec, data)
        d = self.build_defense(name, spec)
        ident = fit_ident(d, info["classifier_hash"], data.fingerprint, self.cfg.seed)
        self.ensure_fitted(d, name, classifier, data, spec, ident)
        return d, classifier, data

    def ensure_fitted(
        self, d: Defense, name: str, classifier, data: Data, spec: DatasetPlugin, ident: dict[str, Any] | None
    ) -> Fit:
        """Load or train a trainable defense in place (then on the run's device, in eval mode), and
        say where its weights came from. Order: the shipped zoo (exactly this fit identity, sha256
        checked), a plugin's own shipped weights (DefenseGAN's generator), the cache, and training;
        ``--retrain`` skips the zoo and the cache."""
        if not d.trainable:
            d.to(self.device).eval()
            return Fit()
        assert ident is not None  # a trainable defense has a fit identity
        key = identity.key(ident)
        path = Path(self.cfg.cache_dir) / "defenses" / f"{data.name}-{type(d).__name__}-{key}.pt"

        def train() -> dict[str, Any]:
            if len(data.train) == 0:
                raise BenchError(
                    f"defense {name} trains on the data, and dataset {data.name} has no train split "
                    "(give train/ and test/ folders, or x_train/y_train)"
                )
            print(
                f"[defense] training {name} on {len(data.train)} {data.name} images"
                + (f": {plan}" if (plan := d.train_plan(len(data.train))) else "")
                + " …"
            )
            t0 = time.perf_counter()
            d.to(self.device).train()
            info = d.fit(data.train, classifier, device=self.device, seed=self.cfg.seed, eps=spec.default_eps) or {}
            info["fit_seconds"] = time.perf_counter() - t0
            info["fit_threads"] = torch.get_num_threads()  # a CPU training's low bits depend on it
            return info

        _, facts = load_or_train(
            "defense",
            data.name,
            name,
            ident,
            key,
            d,
            path,
            train,
            retrain=self.cfg.retrain,
            pretrained=lambda: d.load_pretrained(data),
            ignore=d.training_only,
        )
        d.to(self.device).eval()
        # Whatever the source, the record names the exact weights it was computed with (the
        # tensors inference uses: a discriminator is not part of the defense).
        return Fit({**facts, "defense_fit_key": key, "defense_weights_hash": state_hash(d, d.training_only)})
