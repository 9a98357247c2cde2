"""Executing one group of cells: craft the adversarial examples, defend, classify, score.

A worker holds no store, so it can run in any process (the Ray executor ships it the
``Prepared`` inputs). It yields one ``CellResult`` per cell as soon as it is computed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from attacks.base import AttackPlugin
from bench.builtin.data import DatasetPlugin, Split
from bench.core import numerics, record
from bench.core.config import Config, resolve_device
from bench.core.identity import digest
from bench.core.progress import progress
from bench.core.registry import ATTACKS
from bench.core.threats import attack_model, is_transfer
from bench.run import probes
from bench.run.plan import Cell, Group, make_attack
from bench.run.timing import BatchTimer
from bench.store.provenance import device_name, machine
from defenses.base import Defense

SAMPLES = 8  # images per cell kept for the report's image grid


@dataclass
class Prepared:
    """Everything a group needs, picklable, so an executor can ship it to another process."""

    spec: DatasetPlugin
    test: Split
    classifier: nn.Module
    defenses: dict[str, Defense]
    base: dict[str, Any]          # fields every record of this dataset carries
    clean_pred: torch.Tensor
    classifier_ms: float | None
    surrogates: dict[str, nn.Module] = field(default_factory=dict)  # transfer threat → the model crafted on


@dataclass
class CellResult:
    record: dict[str, Any]
    samples: dict[str, torch.Tensor]  # a few images for the report's grid (stored apart)


@dataclass
class Defended:
    """A defense's predictions on one set of inputs."""

    pred: torch.Tensor
    shown: torch.Tensor        # the first SAMPLES defended images
    wrote_input: bool          # the defense wrote into the tensor it was given


def one_draw_bpda(cell: Cell, d: Defense) -> bool:
    """The cell's attack sees BPDA with one draw of a deterministic defense."""
    return not d.randomized and (cell.threat_effective == "bpda" or
                                 (cell.threat_effective == "bpda-eot" and (cell.eot_samples or 1) == 1))


class Worker:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.device_label = device_name(self.device)
        if self.device.type == "cuda":  # before any work, so every cell and env.json say so
            numerics.deterministic_cuda()
        self.machine = machine(self.device)
        # A suite (``aa``) is its members, each a cell of its own.
        self.attacks = {n: make_attack(n, cfg.attack_params.get(n)) for n in ATTACKS.expand(cfg.attack)}
        self.check_cache: dict[tuple, Any] = {}  # probes shared by the cells of one process
        # Single-draw BPDA examples of the latest (attack, eps, labels), by the rest of their cell's
        # identity (one_draw_bpda).
        self.bpda_once: tuple[tuple, dict[str, tuple]] = ((), {})

    def batches(self, n: int) -> list[tuple[int, int]]:
        return [(i, min(i + self.cfg.batch_size, n)) for i in range(0, n, self.cfg.batch_size)]

    def predict(self, model: nn.Module, x: torch.Tensor, timer: BatchTimer | None = None) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for a, b in self.batches(len(x)):
                xb = x[a:b].to(self.device)
                call = lambda: model(xb).argmax(1)
                out.append((timer(call, b - a) if timer else call()).cpu())
        return torch.cat(out)

    def seed_for(self, *parts: Any) -> int:
        # Seeds derive from the run seed and the batch's start: the batch size is part of the
        # cell identity for that reason.
        return int(digest([self.cfg.seed, *parts], 8), 16)

    def execute(self, prep: Prepared, group: Group) -> Iterator[CellResult]:
        """Yield each cell's result as soon as it is computed (so it can be stored at once)."""
        test, classifier = prep.test, prep.classifier.to(self.device).eval()
        attack = self.attacks[group.attack]
        labels = test.y if group.labels == "true" else prep.clean_pred
        clean_ok = prep.clean_pred == test.y
        shared = None
        for cell in group.cells:
            d = prep.defenses[cell.defense].to(self.device).eval()
            model = attack_model(cell.threat_effective, classifier, d, prep.surrogates.get(group.threat))
            if cell.threat_effective == "gray" or is_transfer(group.threat):
                # crafted on a bare classifier (the target's, or the surrogate's): shared by every defense
                if shared is None:
                    adv, attack_timer = self.craft(model, attack, prep, group, labels)
                    shared = (adv, attack_timer, self.predict(classifier, adv))
                adv, attack_timer, adv_pred = shared
            elif one_draw_bpda(cell, d):
                # BPDA, BPDA+EOT on a deterministic defense (drawn once) and white-box on a
                # non-differentiable one are one computation: same model, same seeds, so the
                # same examples. Crafted once per defense; each cell is still scored and stored, and
                # its attack_ms_per_sample is what crafting those examples cost.
                scope, done = self.bpda_once
                if scope != (group.attack, group.eps, group.labels):
                    scope, done = (group.attack, group.eps, group.labels), {}
                    self.bpda_once = (scope, done)
                # Everything but the threat: data, n, classifier, defense and its weights, attack.
                same = digest({k: v for k, v in cell.identity.items() if k not in ("threat", "eot_samples")})
                if same not in done:
                    adv, attack_timer = self.craft(model, attack, prep, group, labels, d, 1)
                    done[same] = (adv, attack_timer, self.predict(classifier, adv))
                adv, attack_timer, adv_pred = done[same]
            else:
                adv, attack_timer = self.craft(model, attack, prep, group, labels, d, cell.eot_samples)
                adv_pred = self.predict(classifier, adv)
            yield self.score(prep, group, cell, d, model, adv, adv_pred, attack_timer, attack, clean_ok)

    def score(self, prep: Prepared, group: Group, cell: Cell, d: Defense, model: nn.Module,
              adv: torch.Tensor, adv_pred: torch.Tensor, attack_timer: BatchTimer, attack: AttackPlugin,
              clean_ok: torch.Tensor) -> CellResult:
        test, classifier = prep.test, prep.classifier
        timer = BatchTimer(self.device, self.cfg.warmup)
        dc = self.defend(d, classifier, test.x, prep.clean_pred, "clean", timer)
        da = self.defend(d, classifier, adv, adv_pred, "adv", timer)
        adv_ok, dc_ok, da_ok = adv_pred == test.y, dc.pred == test.y, da.pred == test.y
        resubmitted = {}
        if cell.resubmit > 1:
            # The attacker may submit each adversarial example N times to a randomised defense and
            # wins if any draw fails: robust = right on every draw (the bitmap and accuracy stored
            # as defended_*); the mean over draws and the majority vote are stored beside it.
            draws = {"defended_clean": [dc_ok], "defended_adv": [da_ok]}
            for k in range(1, cell.resubmit):
                draws["defended_clean"].append(self.defend(d, classifier, test.x, prep.clean_pred, "clean", None, k).pred
                                               == test.y)
                draws["defended_adv"].append(self.defend(d, classifier, adv, adv_pred, "adv", None, k).pred == test.y)
            resubmitted = record.resubmission(draws)
            dc_ok, da_ok = resubmitted.pop("worst")
        # One dict, merged in the order the fields were always merged (a plugin's fit facts may
        # repeat a key: the later one wins, as it did), then handed to the one constructor.
        fields = {**prep.base, "cell_key": cell.key, "identity": cell.identity, "defense": cell.defense,
                  "defense_params": d.hparams, "attack": group.attack, "attack_params": group.params,
                  "attack_labels": group.labels, "norm": attack.norm, "eps": group.eps,
                  "iterative": attack.iterative, "gradient_free": attack.gradient_free, "threat": group.threat,
                  "threat_effective": cell.threat_effective,
                  "eot_samples": cell.eot_samples, "batch_size": self.cfg.batch_size,
                  "classifier_ms_per_sample": prep.classifier_ms,
                  "attack_ms_per_sample": attack_timer.ms_per_sample(),
                  "defense_ms_per_sample": timer.ms_per_sample(), "timing_batches": len(timer.timed),
                  "defense_randomized": d.randomized, **getattr(d, "fit_info", {}),
                  "max_linf": (adv - test.x).abs().amax().item(),
                  "device": self.device_label, "device_type": self.device.type, **self.machine, "time": time.time()}
        fields.update(resubmitted, resubmit=cell.resubmit)
        rec = record.make("cell", {"clean": clean_ok, "adv": adv_ok, "defended_clean": dc_ok, "defended_adv": da_ok},
                          **fields)
        probe = test.x[:probes.PROBE].to(self.device), test.y[:probes.PROBE].to(self.device)
        rec["checks"] = probes.evaluate(self.check_cache, cell, d, model, probe, rec)
        rec["checks"] += probes.label_leak(rec, clean_ok, dc_ok, da_ok)
        if adv.min().item() < 0 or adv.max().item() > 1:
            rec["checks"].append("adversarial images leave [0,1]")
        if dc.wrote_input or da.wrote_input:
            rec["checks"].append("the defense wrote into its input (the contract forbids it); it was "
                                 "given a copy, so no other cell was affected")
        samples = {"clean": test.x[:SAMPLES], "adv": adv[:SAMPLES], "defended_adv": da.shown,
                   "label": test.y[:SAMPLES], "pred_clean": prep.clean_pred[:SAMPLES],
                   "pred_adv": adv_pred[:SAMPLES], "pred_defended_adv": da.pred[:SAMPLES]}
        return CellResult(rec, samples)

    def craft(self, model: nn.Module, attack: AttackPlugin, prep: Prepared, group: Group,
              labels: torch.Tensor, defense: Defense | None = None, draws: int | None = None
              ) -> tuple[torch.Tensor, BatchTimer]:
        timer, test = BatchTimer(self.device, self.cfg.warmup), prep.test
        out = []
        for a, b in progress(self.batches(len(test)), f"{group.attack} eps={group.eps} {group.threat}"):
            torch.manual_seed(self.seed_for("attack", group.attack, group.eps, a))
            if defense is not None and defense.randomized:
                defense.seed(self.seed_for("attack-defense", group.attack, group.eps, a))
            xb, yb = test.x[a:b].to(self.device), labels[a:b].to(self.device)
            if draws and draws > 1:
                call = lambda: attack.perturb_eot(model, xb, yb, group.eps, prep.spec, draws)
            else:
                call = lambda: attack.perturb(model, xb, yb, group.eps, prep.spec)
            out.append(timer(call, b - a).cpu())
        return torch.cat(out), timer

    def defend(self, d: Defense, classifier: nn.Module, xs: torch.Tensor, undefended: torch.Tensor,
               tag: str, timer: BatchTimer | None, draw: int = 0) -> Defended:
        out, shown, wrote = [], None, False
        for a, b in self.batches(len(xs)):
            xb = xs[a:b].to(self.device)
            # The defense gets a copy: one that writes into its input must not corrupt the test
            # set or the adversarial examples shared with every other defense.
            given = xb.clone()
            if d.randomized:
                # Draw 0 is the one every record has always used; resubmissions draw afresh.
                d.seed(self.seed_for("defense", tag, a) if draw == 0 else self.seed_for("defense", tag, a, draw))
            with torch.no_grad():
                xd = timer(lambda: d(given), b - a) if timer is not None else d(given)
                wrote = wrote or not torch.equal(given, xb)
                out.append(undefended[a:b] if d.identity else classifier(xd).argmax(1).cpu())
            if shown is None:
                shown = xd[:SAMPLES].detach().cpu()
        return Defended(torch.cat(out), shown, wrote)
