"""Executing one group of cells: craft the adversarial examples, defend, classify, score.

A worker holds no store, so it can run in any process (the Ray executor ships it the
``Prepared`` inputs). It yields one ``CellResult`` per cell as soon as it is computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attacks.base import AttackPlugin
from bench.builtin.data import DatasetPlugin, Split
from bench.core import numerics, record
from bench.core.checkcodes import Check, Code
from bench.core.config import Config, resolve_device
from bench.core.errors import BenchError
from bench.core.identity import digest, group_key
from bench.core.progress import heartbeat, progress
from bench.core.record import Record
from bench.core.registry import ATTACKS
from bench.core.stats import wilson
from bench.core.threats import attack_model
from bench.run import contract, probes
from bench.run.passes import Counted, Passes
from bench.run.plan import Cell, Group, make_attack
from bench.run.timing import BatchTimer
from bench.store.partial import Batch, BatchStore
from bench.store.provenance import device_name, machine
from defenses.base import Defense

SAMPLES = 8  # images per cell kept for the report's image grid


class OutOfTime(Exception):
    """The run's time budget (``--time-budget``) is spent: what finished is stored (cells, and the
    finished batches of the cell in progress); ``where`` says how far the cell in progress got."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


def describe(group: Group, cell: Cell) -> str:
    """A cell as a person names it: attack, eps, threat, defense."""
    eps = "" if group.eps is None else f" eps={group.eps:g}"
    return f"{group.attack}{eps} {group.threat} {cell.defense}"


@dataclass
class Prepared:
    """Everything a group needs, picklable, so an executor can ship it to another process."""

    spec: DatasetPlugin
    test: Split
    classifier: nn.Module
    defenses: dict[str, Defense]
    base: dict[str, Any]  # fields every record of this dataset carries
    clean_pred: torch.Tensor
    classifier_ms: float | None
    surrogates: dict[str, nn.Module] = field(default_factory=dict)  # transfer threat → the model crafted on
    # cell key → the stored outcomes ("correct", "resubmit_correct") of a cascade stage that a
    # pending later stage starts from (stages computed in this process are remembered by the worker)
    prior: dict[str, dict[str, Any]] = field(default_factory=dict)
    # defense name → where its weights came from (bench.run.plan.Fit.facts), for each record's ``fit``
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Stage:
    """Where a cell's outcomes come from: a cascade stage (``index``: the test indices it crafted,
    ``before``: the previous stage's stored outcomes) or a whole cell (``index`` None)."""

    index: torch.Tensor | None
    before: dict[str, Any] | None
    n: int

    def merged(self, got: torch.Tensor, outcome: str, where: str = "correct") -> torch.Tensor:
        """``got`` (on the images run on) with the previous stage's ``outcome`` elsewhere (its
        ``defended_adv`` where it stored no ``where[outcome]``)."""
        if self.index is None:
            return got
        assert self.before is not None, "a cascade stage is given the previous stage's outcomes"
        bits = (self.before.get(where) or {}).get(outcome) or self.before["correct"]["defended_adv"]
        out = record.decode_tensor(bits, self.n).clone()
        out[self.index] = got
        return out


def boundary_checks(
    eps: float | None, norm: str, adv: torch.Tensor, x: torch.Tensor, dc: Defended, da: Defended
) -> list[Check]:
    """What the plugins returned, checked at the boundary (bench.run.contract): adversarial images
    leaving [0,1] or their L2 ball, a defense's outputs leaving [0,1], a defense writing into its input."""
    found: list[Check] = []
    if adv.min().item() < 0 or adv.max().item() > 1:
        found.append(Check(Code.LEAVES_RANGE, "adversarial images leave [0,1]"))
    if eps is not None and norm == "L2" and len(adv):
        # max_linf (probes' check) bounds an L2 ball only loosely: the per-image L2 norm.
        l2 = (adv - x).flatten(1).norm(dim=1).max().item()
        if l2 > eps * (1 + 1e-5) + 1e-6:
            found.append(
                Check(Code.EXCEEDS_EPS, f"perturbation exceeds eps: max ||x_adv - x||_2 = {l2:.6g} > {eps:.6g}")
            )
    low, high = min(dc.low, da.low), max(dc.high, da.high)
    if contract.out_of_range(low, high):
        found.append(
            Check(
                Code.DEFENSE_RANGE,
                f"the defense's outputs leave [0,1] (from {low:.4g} to {high:.4g}): the classifier "
                "was scored on images no data set holds",
            )
        )
    if dc.wrote_input or da.wrote_input:
        found.append(
            Check(
                Code.WROTE_INPUT,
                "the defense wrote into its input (the contract forbids it); it was "
                "given a copy, so no other cell was affected",
            )
        )
    return found


def samples(
    prep: Prepared, adv: torch.Tensor, adv_pred: torch.Tensor, dc: Defended, da: Defended, index: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The first images of a cell for the report's grid: clean, adversarial, defended adversarial
    (a cascade stage: defended adversarial where it crafted, defended clean elsewhere)."""
    shown, pred_da = da.shown, da.pred
    if index is not None:
        shown, pred_da = dc.shown.clone(), dc.pred.clone()
        pred_da[index] = da.pred
        first = index[index < len(shown)]
        shown[first] = da.shown[: len(first)]
    test = prep.test
    return {
        "clean": test.x[:SAMPLES],
        "adv": adv[:SAMPLES],
        "defended_adv": shown,
        "label": test.y[:SAMPLES],
        "pred_clean": prep.clean_pred[:SAMPLES],
        "pred_adv": adv_pred[:SAMPLES],
        "pred_defended_adv": pred_da[:SAMPLES],
    }


@dataclass
class CellResult:
    record: Record
    samples: dict[str, torch.Tensor]  # a few images for the report's grid (stored apart)


@dataclass
class Crafted:
    """A group's adversarial examples for one set of images: all of them, or a cascade stage's."""

    adv: torch.Tensor  # every test image: crafted where ``index`` says, the clean image elsewhere
    timer: BatchTimer
    passes: Passes  # forward and backward passes through the attacked model, all batches
    pred: torch.Tensor  # the bare classifier on ``adv`` (the clean prediction where not crafted)
    index: torch.Tensor | None  # the images crafted (a cascade stage), None for all


@dataclass
class Defended:
    """A defense's predictions on one set of inputs."""

    pred: torch.Tensor
    shown: torch.Tensor  # the first SAMPLES defended images
    wrote_input: bool  # the defense wrote into the tensor it was given
    low: float = 0.0  # the smallest and largest value it returned (bench.run.contract: the range flag)
    high: float = 1.0


def one_draw_bpda(cell: Cell, d: Defense) -> bool:
    """The cell's attack sees BPDA with one draw of a deterministic defense."""
    t = cell.threat_effective
    return not d.randomized and (t.is_bpda or (t.is_eot and (cell.eot_samples or 1) == 1))


class Worker:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.device_label = device_name(self.device)
        if self.device.type == "cuda":  # before any work, so every cell and env.json say so
            numerics.deterministic_cuda()
        self.machine = machine(self.device)
        # A suite (``aa``) is its members, each a cell of its own.
        # Checked on the instance (bench.run.contract): a raise or a wrong output names the attack.
        self.attacks = {
            n: contract.checked_attack(n, make_attack(n, cfg.attack_params.get(n))) for n in ATTACKS.expand(cfg.attack)
        }
        self.check_cache: dict[tuple, Any] = {}  # probes shared by the cells of one process
        # Single-draw BPDA examples of the latest (attack, eps, labels), by the rest of their cell's
        # identity (one_draw_bpda).
        self.bpda_once: tuple[tuple, dict[str, Crafted]] = ((), {})
        # Cascade stages this worker computed: cell key → outcomes, for the next stage.
        self.outcomes: dict[str, dict[str, Any]] = {}
        # Set by the runner that owns a results folder: finished batches are saved there (and taken
        # back by a rerun), and a time budget stops the run between batches.
        self.partial: BatchStore | None = None
        self.deadline: float | None = None  # time.monotonic() at which the budget is spent
        self.crafts: set[str] = set()  # the crafts whose batches this run saved
        self.resumed = 0  # batches taken back from an interrupted run

    def check_time(self, where: str, next_batch_s: float = 0.0) -> None:
        """Stop (``OutOfTime``) when the budget is spent, or would be before a batch as long as the
        longest one so far finishes: a batch cut off is lost, so it is not started."""
        if self.deadline is not None and time.monotonic() + next_batch_s > self.deadline:
            raise OutOfTime(where)

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
        shared: dict[str, Crafted] = {}
        for cell in group.cells:
            what = describe(group, cell)
            self.check_time(f"before {what}")
            d = prep.defenses[cell.defense].to(self.device).eval()
            self.preflight(prep, cell, d)
            model = attack_model(cell.threat_effective, classifier, d, prep.surrogates.get(group.threat))
            before, index = self.stage_start(prep, cell)
            images = "all" if index is None else digest(index.tolist())
            if cell.threat_effective.is_gray or group.threat.is_transfer:
                # crafted on a bare classifier (the target's, or the surrogate's): shared by every
                # defense (a cascade stage's by every defense that left the same images robust)
                if images not in shared:
                    # examples crafted on the bare classifier do not depend on the defense's fields
                    craft_id = digest(["shared", group_key({"identity": cell.identity}, ("defense",)), images])
                    shared[images] = self.craft(model, attack, prep, group, labels, index=index, craft=(craft_id, what))
                crafted = shared[images]
            elif one_draw_bpda(cell, d) or self.same_queries(cell, group, attack):
                # BPDA, BPDA+EOT on a deterministic defense (drawn once) and white-box on a
                # non-differentiable one are one computation: same model, same seeds, so the
                # same examples; so are a gradient-free cascade stage's under white-box, BPDA and
                # BPDA+EOT (it queries the white-box model) where the earlier stages left the same
                # images. Crafted once per defense; each cell is still scored and stored, and
                # its attack_ms_per_sample is what crafting those examples cost.
                scope, done = self.bpda_once
                if scope != (group.attack, group.eps, group.labels, group.cascade):
                    scope, done = (group.attack, group.eps, group.labels, group.cascade), {}
                    self.bpda_once = (scope, done)
                # Everything but the threat: data, n, classifier, defense and its weights, attack,
                # and the images crafted.
                same = digest([group_key({"identity": cell.identity}, ("query",)), images])
                if same not in done:
                    draws = 1 if one_draw_bpda(cell, d) else cell.eot_samples
                    done[same] = self.craft(model, attack, prep, group, labels, d, draws, index, (same, what))
                crafted = done[same]
            else:
                craft_id = digest([cell.identity, images])
                crafted = self.craft(model, attack, prep, group, labels, d, cell.eot_samples, index, (craft_id, what))
            result = self.score(prep, group, cell, d, model, crafted, attack, clean_ok, before)
            self.outcomes[cell.key] = {
                k: result.record[k] for k in ("correct", "resubmit_correct") if k in result.record
            }
            yield result

    def preflight(self, prep: Prepared, cell: Cell, d: Defense) -> None:
        """The defense contract on a few test images before any attack runs through the defense:
        under white-box and BPDA a broken defense would otherwise fail (or feed NaN) inside the
        attack, blamed on the attack. Once per defense, dataset and classifier in a process (like
        the probes); every batch a cell scores is checked again in ``defend``."""
        key = ("contract", cell.defense, prep.base.get("dataset"), prep.base.get("classifier_hash"))
        if key in self.check_cache:
            return
        where = f"a first check on {probes.PROBE} test images, before {contract.cell_name(cell)}"
        given = prep.test.x[: probes.PROBE].to(self.device)
        if d.randomized:
            d.seed(self.seed_for("contract"))  # reproducible; every scored batch is seeded afresh
        with torch.no_grad():
            out = contract.blamed("defense", cell.defense, where, lambda: d(given.clone()))
        contract.defense_output(cell.defense, where, given, out)
        self.check_cache[key] = True

    @staticmethod
    def same_queries(cell: Cell, group: Group, attack: AttackPlugin) -> bool:
        """A gradient-free cascade stage under white-box, BPDA or BPDA+EOT: it queries the white-box
        model (bench.core.threats.Threat.query), so its examples depend on the images only."""
        return (
            bool(group.cascade) and attack.gradient_free and group.threat.through_defense and cell.eot_samples is None
        )

    def stage_start(self, prep: Prepared, cell: Cell) -> tuple[dict[str, Any] | None, torch.Tensor | None]:
        """A cascade stage's previous outcomes and the images it runs on (those the previous stage
        left robust: defended and right); (None, None) for a cell that runs on every image."""
        if cell.after is None:
            return None, None
        before = self.outcomes.get(cell.after) or prep.prior.get(cell.after)
        if before is None:
            raise BenchError(
                f"cascade cell {cell.key}: the previous stage's cell {cell.after} is neither stored "
                "nor computed before it"
            )
        robust = record.decode_tensor(before["correct"]["defended_adv"], len(prep.test))
        return before, robust.nonzero().flatten()

    def score(
        self,
        prep: Prepared,
        group: Group,
        cell: Cell,
        d: Defense,
        model: nn.Module,
        crafted: Crafted,
        attack: AttackPlugin,
        clean_ok: torch.Tensor,
        before: dict[str, Any] | None = None,
    ) -> CellResult:
        """One cell's record. A cascade stage (``before``: the previous stage's outcomes) defends
        only the images it crafted; every other image keeps the previous stage's outcomes."""
        test, classifier = prep.test, prep.classifier
        adv, adv_pred, index = crafted.adv, crafted.pred, crafted.index
        n = len(test)
        timer = BatchTimer(self.device, self.cfg.warmup)
        nm, wh = cell.defense, contract.cell_name(cell)  # named in a contract error
        dc = self.defend(d, classifier, test.x, prep.clean_pred, "clean", timer, name=nm, where=wh)
        ran = slice(None) if index is None else index
        da = self.defend(d, classifier, adv[ran], adv_pred[ran], "adv", timer, index=index, name=nm, where=wh)

        stage = Stage(index, before, n)
        adv_ok, dc_ok = stage.merged(adv_pred[ran] == test.y[ran], "adv"), dc.pred == test.y
        da_ok = stage.merged(da.pred == test.y[ran], "defended_adv")
        resubmitted: dict[str, Any] = {}
        if cell.resubmit > 1:
            dc_ok, da_ok, resubmitted = self.resubmit(prep, cell, d, crafted, stage, dc_ok, da_ok)
        # One dict handed to the one constructor; how the classifier and this defense came to be
        # (whatever the defense's fit returned among it) under ``fit``, never beside the fields.
        fields = {
            **prep.base,
            "cell_key": cell.key,
            "identity": cell.identity,
            "defense": cell.defense,
            "defense_params": d.hparams,
            "attack": group.attack,
            "attack_params": group.params,
            "attack_labels": group.labels,
            "norm": attack.norm,
            "eps": group.eps,
            "iterative": attack.iterative,
            "gradient_free": attack.gradient_free,
            "threat": group.threat,
            "threat_effective": cell.threat_effective,
            "eot_samples": cell.eot_samples,
            "batch_size": self.cfg.batch_size,
            "classifier_ms_per_sample": prep.classifier_ms,
            "attack_ms_per_sample": crafted.timer.ms_per_sample(),
            "defense_ms_per_sample": timer.ms_per_sample(),
            "timing_batches": len(timer.timed),
            "defense_randomized": d.randomized,
            "fit": {**prep.base.get("fit", {}), **prep.fits.get(cell.defense, {})},
            "max_linf": (adv - test.x).abs().amax().item(),
            "device": self.device_label,
            "device_type": self.device.type,
            **self.machine,
            "time": time.time(),
        }
        fields.update(resubmitted, resubmit=cell.resubmit)
        # Passes through the attacked model per test image (all n: a cascade stage's add up).
        fields["attack_forward_per_sample"] = crafted.passes.forward / n
        fields["attack_backward_per_sample"] = crafted.passes.backward / n
        if index is not None:
            ran_on = torch.zeros(n, dtype=torch.bool)
            ran_on[index] = True
            fields["cascade"] = list(group.cascade)
            fields["ran_on"] = record.encode(ran_on)
        rec = record.make(
            "cell", {"clean": clean_ok, "adv": adv_ok, "defended_clean": dc_ok, "defended_adv": da_ok}, **fields
        )
        probe = test.x[: probes.PROBE].to(self.device), test.y[: probes.PROBE].to(self.device)
        found = probes.evaluate(self.check_cache, cell, d, model, probe, rec)
        found += probes.label_leak(rec, clean_ok, dc_ok, da_ok)
        found += boundary_checks(group.eps, attack.norm, adv, test.x, dc, da)
        return CellResult(rec.with_checks(found), samples(prep, adv, adv_pred, dc, da, index))

    def resubmit(
        self,
        prep: Prepared,
        cell: Cell,
        d: Defense,
        crafted: Crafted,
        stage: Stage,
        dc_ok: torch.Tensor,
        da_ok: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The attacker may submit each adversarial example N times to a randomised defense and
        wins if any draw fails: robust = right on every draw (the bitmap and accuracy stored as
        defended_*); the mean over draws and the majority vote are stored beside it. A cascade
        stage's images it did not run on count as the previous stage had them (right on every draw
        where it was robust). Returns (defended clean, defended adversarial, the resubmission fields)."""
        test, classifier, n, index = prep.test, prep.classifier, len(prep.test), crafted.index
        ran = slice(None) if index is None else index
        adv, adv_pred = crafted.adv[ran], crafted.pred[ran]
        nm, wh = cell.defense, contract.cell_name(cell)
        draws = {"defended_clean": [dc_ok], "defended_adv": [da_ok]}
        for k in range(1, cell.resubmit):
            draws["defended_clean"].append(
                self.defend(d, classifier, test.x, prep.clean_pred, "clean", None, k, name=nm, where=wh).pred == test.y
            )
            got = self.defend(d, classifier, adv, adv_pred, "adv", None, k, index, name=nm, where=wh).pred
            draws["defended_adv"].append(stage.merged(got == test.y[ran], "defended_adv"))
        resubmitted = record.resubmission(draws)
        dc_ok, da_ok = (torch.from_numpy(w) for w in resubmitted.pop("worst"))
        if index is not None:  # the previous stage's majority and first draw where this one did not run
            for outcome in ("defended_adv_majority", "defended_adv_first_draw"):
                mine = record.decode_tensor(resubmitted["resubmit_correct"][outcome], n)
                full = stage.merged(mine[index], outcome, "resubmit_correct")
                resubmitted["resubmit_correct"][outcome] = record.encode(full)
                name = outcome.replace("defended_adv_", "defended_adv_acc_")
                resubmitted[name] = float(full.float().mean())
                if outcome.endswith("majority"):
                    k = int(full.sum())
                    resubmitted[f"{name}_ci_low"], resubmitted[f"{name}_ci_high"] = wilson(k, n)
        return dc_ok, da_ok, resubmitted

    def craft(
        self,
        model: nn.Module,
        attack: AttackPlugin,
        prep: Prepared,
        group: Group,
        labels: torch.Tensor,
        defense: Defense | None = None,
        draws: int | None = None,
        index: torch.Tensor | None = None,
        craft: tuple[str, str] | None = None,
    ) -> Crafted:
        """Adversarial examples of ``index``'s images (every image when None), batch by batch; each
        batch is seeded by the test index of its first image, so a batch of the images every
        earlier stage left robust starts from the seed it has when every image is attacked, and a
        batch does not depend on the batches before it. ``craft``: an id of everything that
        determines these examples, and what to call them: each finished batch is saved under it
        (``self.partial``) and taken back by the same command rerun after a kill or a time budget."""
        timer, test, passes = BatchTimer(self.device, self.cfg.warmup), prep.test, Passes()
        craft_id, what = craft if craft is not None else (None, f"{group.attack} eps={group.eps} {group.threat}")
        x, y = (test.x, labels) if index is None else (test.x[index], labels[index])
        adv = test.x.clone()
        out: list[torch.Tensor] = []
        took: list[float] = []  # seconds of each batch computed here: the deadline's estimate of the next
        for a, b in progress(self.batches(len(x)), what, total=len(x), size=lambda span: span[1] - span[0]):
            kept = self.partial.load(craft_id, a, b) if self.partial is not None and craft_id else None
            if kept is not None:  # finished by an earlier, interrupted run of the same command
                timer.samples.append(kept.ms_per_sample)
                passes.add(Passes(kept.forward, kept.backward))
                out.append(kept.adv)
                self.resumed += 1
                if craft_id is not None:
                    self.crafts.add(craft_id)
                continue
            self.check_time(f"{what}: {a} of {len(x)} images crafted", max(took, default=0.0))
            start = a if index is None else int(index[a])
            torch.manual_seed(self.seed_for("attack", group.attack, group.eps, start))
            if defense is not None and defense.randomized:
                defense.seed(self.seed_for("attack-defense", group.attack, group.eps, start))
            xb, yb = x[a:b].to(self.device), y[a:b].to(self.device)
            mine = Passes()  # this batch's, saved with it
            counted = Counted(model, mine)
            if draws and draws > 1:
                call = lambda: attack.perturb_eot(counted, xb, yb, group.eps, prep.spec, draws)
            else:
                call = lambda: attack.perturb(counted, xb, yb, group.eps, prep.spec)
            t0 = time.perf_counter()
            with heartbeat(f"{what}: images {a}-{b} of {len(x)}", mine):
                out.append(timer(call, b - a).cpu())
            took.append(time.perf_counter() - t0)
            passes.add(mine)
            if self.partial is not None and craft_id:
                self.partial.save(craft_id, a, b, Batch(out[-1], mine.forward, mine.backward, timer.samples[-1]))
                self.crafts.add(craft_id)
        crafted = torch.cat(out) if out else x.clone()
        if index is None:
            adv = crafted
        else:
            adv[index] = crafted
        pred = prep.clean_pred.clone()
        if len(crafted):
            pred[slice(None) if index is None else index] = self.predict(prep.classifier, crafted)
        return Crafted(adv, timer, passes, pred, index)

    def defend(
        self,
        d: Defense,
        classifier: nn.Module,
        xs: torch.Tensor,
        undefended: torch.Tensor,
        tag: str,
        timer: BatchTimer | None,
        draw: int = 0,
        index: torch.Tensor | None = None,
        name: str = "the defense",
        where: str = "a cell",
    ) -> Defended:
        """``index``: the test indices of ``xs`` (a cascade stage's images); a batch is seeded by
        its first image's. ``name`` and ``where``: the defense's and the cell's names, for an
        error about what it returned (``bench.run.contract``: checked on every batch)."""
        out, shown, wrote = [], None, False
        low, high = 0.0, 1.0
        for a, b in self.batches(len(xs)):
            xb = xs[a:b].to(self.device)
            # The defense gets a copy: one that writes into its input must not corrupt the test
            # set or the adversarial examples shared with every other defense.
            given = xb.clone()
            if d.randomized:
                # Draw 0 is the one every record has always used; resubmissions draw afresh.
                start = a if index is None else int(index[a])
                d.seed(
                    self.seed_for("defense", tag, start) if draw == 0 else self.seed_for("defense", tag, start, draw)
                )
            with torch.no_grad():
                call = (lambda: timer(lambda: d(given), b - a)) if timer is not None else (lambda: d(given))
                xd = contract.blamed("defense", name, where, call)
                # Before anything scores it: a wrong shape would fail inside the classifier, a NaN
                # would be scored as a prediction.
                lo, hi = contract.defense_output(name, where, xb, xd)
                low, high = min(low, lo), max(high, hi)
                wrote = wrote or not torch.equal(given, xb)
                out.append(undefended[a:b] if d.identity else classifier(xd).argmax(1).cpu())
            if shown is None or len(shown) < SAMPLES:  # the first SAMPLES images, over batches smaller than that
                more = xd[: SAMPLES - (0 if shown is None else len(shown))].detach().cpu()
                shown = more if shown is None else torch.cat([shown, more])
        if not out:  # a cascade stage with no image left to attack
            return Defended(undefended[:0].clone(), xs[:SAMPLES].detach().cpu(), False)
        assert shown is not None  # at least one batch ran
        return Defended(torch.cat(out), shown, wrote, low, high)
