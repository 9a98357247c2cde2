"""The driver of a run: validate, prepare each dataset, plan, hand groups to an executor, store.

It owns a ``Worker`` (which computes), a ``Models`` (``bench.run.models``: where the classifier,
surrogates and defenses come from) and is the only writer of the results folder, which it
locks for the whole run; the worst rows it stores are ``bench.analysis.worst``'s. Every run ends with one line saying how many cells it computed and
how many it took from the store, and from which stored runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.analysis import checks, worst
from bench.builtin import userdata
from bench.builtin.classifiers import resolve_recipe
from bench.builtin.data import Data, DatasetPlugin, Split, fingerprint
from bench.core import numerics, record
from bench.core.config import Config
from bench.core.errors import BenchError
from bench.core.record import Record
from bench.core.registry import ATTACKS, CLASSIFIERS, DATASETS
from bench.core.threats import Threat
from bench.run.executors import LocalExecutor
from bench.run.models import Models
from bench.run.plan import Group, fit_ident, make_attack, make_defense, plan
from bench.run.timing import BatchTimer
from bench.run.worker import CellResult, OutOfTime, Prepared, Worker
from bench.store.partial import BatchStore, code_version
from bench.store.provenance import make_env
from bench.store.runs import ResultsLock, RunWriter, iter_records, refuse_dirty_reference
from defenses.base import Defense


@dataclass(frozen=True)
class Summary:
    """What a run says when it ends: ``line``, what was computed and what was taken from the store;
    ``budget``, what is left when its time budget stopped it (None when it did not). Printed, the
    two lines."""

    line: str
    budget: str | None = None

    def __str__(self) -> str:
        return self.line + (f"\n{self.budget}" if self.budget else "")


class Runner:
    def __init__(
        self,
        cfg: Config,
        command: list[str],
        *,
        classifier: torch.nn.Module | None = None,
        datasets: dict[str, DatasetPlugin] | None = None,
        defenses: dict[str, Defense] | None = None,
    ) -> None:
        """``cfg``: a validated configuration (``bench.core.config.resolve``); ``command``: how the
        run was asked for, as its env.json records it (a command line, or a library call).
        Objects a library caller hands over (``bench.evaluate``): ``classifier``, a model used as
        it is (``cfg.classifier`` names it); ``datasets`` and ``defenses``, by the names
        ``cfg.dataset`` and ``cfg.defenses`` list them under."""
        self.cfg, self.command = cfg, command
        self.dataset_objects, self.defense_objects = dict(datasets or {}), dict(defenses or {})
        self.worker = Worker(cfg)  # resolves the device and every attack: errors before any work
        self.device = self.worker.device
        self.models = Models(cfg, self.device, classifier, self.defense_objects)
        self.specs = [
            self.dataset_objects.get(n) or userdata.resolve(n, cfg.image_size) or DATASETS.get(n)() for n in cfg.dataset
        ]
        if cfg.classifier and classifier is None:
            CLASSIFIERS.get(cfg.classifier)
        # Every parameter table is validated, in the grid or not: a typo is an error today,
        # not when the table is first used.
        for name, params in cfg.attack_params.items():
            make_attack(name, params)
        for name, params in cfg.defense_params.items():
            make_defense(name, params)
        for n in cfg.defenses:
            if n not in self.defense_objects:
                make_defense(n, cfg.defense_params.get(n))
        given = [cfg.classifier] if classifier is None and cfg.classifier is not None else []
        for name in {*given, *cfg.classifier_recipes}:
            resolve_recipe(name, cfg.classifier_recipe, cfg.classifier_recipes.get(name, {}))
        if cfg.classifier_weights and not Path(cfg.classifier_weights).is_file():
            raise BenchError(f"classifier weights {cfg.classifier_weights} do not exist")
        refuse_dirty_reference(Path(cfg.results_dir))
        self.lock = ResultsLock(Path(cfg.results_dir))
        self.done = {} if cfg.rerun else {r.get("cell_key"): r for r in iter_records(Path(cfg.results_dir))}
        self.writer = RunWriter(Path(cfg.results_dir), cfg.to_dict(), make_env(command, self.device, cfg.seed))
        # Finished batches of a cell in progress, taken back by the same command after a kill or a
        # time budget (--rerun recomputes them too); saved under what they were computed with.
        env = {
            "torch": torch.__version__,
            "numerics": f"{numerics.mode_in_force()} {numerics.cpu_capability()}",
            "threads": torch.get_num_threads(),
            "device": self.worker.device_label,
            "code": code_version(),
        }
        self.worker.partial = BatchStore(Path(cfg.results_dir), env, read=not cfg.rerun)
        self.pending = 0  # cells planned and not in the store (the datasets prepared so far)
        self.prepared = 0  # datasets planned
        self.out_of_time: OutOfTime | None = None
        self.records: list[Record] = []
        self.reused: list[Record] = []
        self.stored_keys: set[str] = set()

    def close(self) -> None:
        self.lock.release()

    def run(self, executor: Any = None) -> list[Record]:
        if self.cfg.time_budget is not None:
            self.worker.deadline = time.monotonic() + self.cfg.time_budget
        try:
            for spec in self.specs:
                prep, groups = self.prepare(spec)
                self.prepared += 1
                self.pending += sum(len(g.cells) for g in groups)
                if groups:
                    (executor or LocalExecutor()).run(self, prep, groups)
                self.worst_case_rows(prep.base, len(prep.test))
        except OutOfTime as stop:
            # Everything finished is stored; the same command continues from it.
            self.out_of_time = stop
            return self.records
        if self.worker.partial is not None:  # every cell that used them is stored
            for craft in self.worker.crafts:
                self.worker.partial.discard(craft)
        return self.records

    def summary(self) -> Summary:
        """What was computed and what was taken from the store; and what is left when the time
        budget stopped the run."""
        return Summary(self.run_line(), self.budget_line())

    def run_line(self) -> str:
        """Computed vs taken from the store, and where each came from / went."""
        line = f"[run] computed {self.writer.count} cell(s)"
        if self.worker.resumed:
            line += f" ({self.worker.resumed} batch(es) taken back from an interrupted run)"
        if self.writer.count:
            line += f" (stored in {self.writer.dir})"
        line += f"; took {len(self.reused)} from the store"
        if self.reused:
            runs = sorted({r.get("run_id", "?") for r in self.reused})
            line += f" (run(s) {', '.join(runs)} under {self.cfg.results_dir}; --rerun recomputes)"
        once = sum(Threat.stored(r.get("threat")).is_eot and r.get("eot_samples") == 1 for r in self.reused)
        if once and self.cfg.eot_samples > 1:
            line += (
                f"; {once} of them bpda-eot on a deterministic defense, which is drawn once whatever --eot-samples says"
            )
        return line

    def budget_line(self) -> str | None:
        """What is left when the time budget stopped the run (None when it did not)."""
        if self.out_of_time is None:
            return None
        left = self.pending - self.writer.count
        line = (
            f"[budget] --time-budget {self.cfg.time_budget} s spent, stopped {self.out_of_time.where}: "
            f"{left} planned cell(s) left"
        )
        if self.prepared < len(self.specs):
            line += f", and {len(self.specs) - self.prepared} dataset(s) not yet planned"
        if self.worker.partial is not None and self.worker.partial.root.is_dir():
            line += f"; finished batches saved under {self.worker.partial.root}"
        return line + "; run the same command again to continue"

    def reuse(self, rec: Record) -> None:
        self.records.append(rec)
        self.reused.append(rec)

    def prepare(self, spec: DatasetPlugin) -> tuple[Prepared, list[Group]]:
        """Load data and classifier, build defenses, plan, train what is needed, list pending groups."""
        cfg = self.cfg
        data: Data = spec.load(Path(cfg.data_root), cfg.offline)
        print(
            f"[data] {data.name}: train {len(data.train)} from {data.train.source}; "
            f"test {len(data.test)} from {data.test.source}"
        )
        if cfg.eps is None and hasattr(spec, "describe_eps"):  # your data: the default is stated, never silent
            print(f"[data] {data.name}: no eps given; using {spec.describe_eps()}")
        n = min(cfg.limit or len(data.test), len(data.test))
        test = Split(data.test.x[:n], data.test.y[:n], data.test.source)
        clf_name = cfg.classifier or spec.default_classifier
        classifier, clf_info = self.models.classifier_for(spec, data)
        clf_info.pop("classifier_identity", None)  # its key and recipe are recorded; the full dict is the zoo's
        built = {name: self.models.build_defense(name, spec) for name in cfg.defenses}
        fit_idents = {
            name: fit_ident(d, clf_info["classifier_hash"], data.fingerprint, cfg.seed) for name, d in built.items()
        }
        # Trained (or loaded) before planning: a cell's identity names the exact weights it uses.
        fits = {
            name: self.models.ensure_fitted(d, name, classifier, data, spec, fit_idents[name])
            for name, d in built.items()
        }
        data_id = {
            "dataset": data.name,
            "train_source": data.train.source,
            "test_source": data.test.source,
            "train": fingerprint(data.train),
            "test": fingerprint(data.test),
        }
        base = {
            "dataset": data.name,
            "classifier": clf_name,
            "seed": cfg.seed,
            "n": n,
            "limit": cfg.limit,
            "train_source": data.train.source,
            "test_source": data.test.source,
            "n_train": len(data.train),
            "n_test": len(data.test),
            "data_fingerprint": data.fingerprint,
            "run_id": self.writer.run_id,
            "classifier_hash": clf_info["classifier_hash"],
            # how the classifier came to be: the record's fit facts (a cell adds its defense's)
            "fit": {k: v for k, v in clf_info.items() if k != "classifier_hash"},
        }
        surrogates: dict[str, tuple[torch.nn.Module, str]] = {}  # transfer threat → (model, weights hash)
        for t in map(Threat, cfg.threat):
            if t.is_transfer:
                assert t.surrogate is not None  # a transfer threat names its surrogate (Threat parses it)
                surrogates[t] = self.models.surrogate_for(t.surrogate, t.seed, spec, data)
        groups = plan(
            cfg,
            spec,
            data_id,
            n,
            clf_name,
            clf_info["classifier_hash"],
            self.worker.attacks,
            built,
            fits,
            self.device.type,
            {t: h for t, (_, h) in surrogates.items()},
        )
        free = sorted(a for a, x in self.worker.attacks.items() if x.gradient_free)
        if free and any(t.same_outputs_as_white for t in cfg.threat):
            print(
                f"[plan] {', '.join(free)}: gradient-free, so BPDA and BPDA+EOT give it the white-box model's "
                "outputs: its white-box cells count under those threats too (computed once)"
            )
        pending = []
        for g in groups:
            todo = []
            for cell in g.cells:
                if cell.key in self.done:
                    self.reuse(self.done[cell.key])
                else:
                    todo.append(cell)
            if todo:
                pending.append(Group(g.attack, g.eps, g.threat, g.labels, g.params, todo, g.cascade))
        # A pending cascade stage whose previous stage is stored starts from that cell's outcomes.
        prior = {
            c.after: {k: self.done[c.after][k] for k in ("correct", "resubmit_correct") if k in self.done[c.after]}
            for g in pending
            for c in g.cells
            if c.after is not None and c.after in self.done
        }
        timer = BatchTimer(self.device, cfg.warmup)
        clean_pred = self.worker.predict(classifier, test.x, timer)
        return Prepared(
            spec,
            test,
            classifier,
            built,
            base,
            clean_pred,
            timer.ms_per_sample(),
            {t: m for t, (m, _) in surrogates.items()},
            prior,
            {name: fit.facts for name, fit in fits.items()},
        ), pending

    def trained_defense(self, spec: DatasetPlugin, name: str) -> tuple[Defense, torch.nn.Module, Data]:
        """One defense of the config, loaded or trained, with its classifier and data (perf scripts)."""
        return self.models.trained_defense(spec, name)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def store(self, result: CellResult) -> None:
        """Append one finished cell (the driver is the only writer)."""
        rec = result.record
        if rec["cell_key"] in self.stored_keys:
            return  # a retried task delivered a cell twice
        found = (
            checks.versus_fgsm(rec, self.records)
            + checks.versus_gradient_free(rec, self.records)
            + checks.cascade_gradient_free(rec)
        )
        if found:
            rec = rec.with_checks([*rec.check_list(), *found])
        if result.samples:
            rec = rec.replace(samples=self.writer.save_samples(rec["cell_key"], result.samples))
        self.writer.append(rec)
        self.stored_keys.add(rec["cell_key"])
        self.records.append(rec)
        print(
            f"[cell] {rec['dataset']} {rec['attack']} eps={rec['eps']} {rec['threat']} {rec['defense']}: "
            f"clean {rec['clean_acc']:.3f} adv {rec['adv_acc']:.3f} defended clean "
            f"{rec['defended_clean_acc']:.3f} defended adv {rec['defended_adv_acc']:.3f}"
            + (
                f" ({rec['defense_ms_per_sample']:.3g} ms/sample)"
                if rec.get("defense_ms_per_sample") is not None
                else ""
            )
            + "".join(f" [warning: {c}]" for c in rec.get("checks", []))
        )

    def worst_case_rows(self, base: dict[str, Any], n: int) -> None:
        """Store the run's worst rows (``bench.analysis.worst``: which cells make which row, and the
        per-image worst case over them); one already stored is taken from the store."""
        suites = {s: ATTACKS.suites[s][0] for s in self.cfg.attack if s in ATTACKS.suites}
        for g in worst.worst_groups(self.records, base["dataset"], list(self.cfg.threat), suites, ATTACKS.cascades()):
            if g.key in self.done:
                self.reuse(self.done[g.key])
                continue
            combined = worst.worst_case(g.records, n, record.OUTCOMES)
            if combined is None or combined.outcomes is None:  # every cell of this run stores its bitmaps
                raise BenchError(f"worst row {g.key}: a cell of it stores no per-image outcomes on {n} images")
            rec = record.make("worst", combined.outcomes, **{**base, **worst.worst_fields(g), "time": time.time()})
            self.store(CellResult(rec, {}))
