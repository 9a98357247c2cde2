"""The grid runner: (dataset × attack × eps × threat × defense) cells → stored records.

Adversarial examples are crafted once per (dataset, attack, eps) in gray-box cells and
reused for every defense; clean predictions once per dataset. A cell already stored (same
identity) is skipped unless ``rerun``; each finished cell is appended at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm import tqdm

import attacks  # noqa: F401  (registers the built-in attacks)
import defenses  # noqa: F401  (registers the built-in defenses)
from attacks.base import AttackPlugin
from attacks.generic import TorchattacksAttack
from bench.checkpoint import load_state, save_state, stable_hash
from bench.classifiers import check_recipe, get_classifier
from bench.config import Config, resolve_device
from bench.data import Data, DatasetPlugin, Split
from bench.errors import BenchError
from bench.registry import ATTACKS, CLASSIFIERS, DATASETS, DEFENSES, build
from bench.store import RunWriter, device_name, iter_records, make_env
from bench import checks
from bench.stats import wilson
from bench.threats import attack_model
from bench.timing import BatchTimer
from defenses.base import Defense


SAMPLES = 8  # images per cell kept for the report's image grid


def make_attack(name: str, params: dict[str, Any] | None) -> AttackPlugin:
    if name.startswith("torchattacks:"):
        return TorchattacksAttack(name.split(":", 1)[1], params)
    attack = build(ATTACKS, name, params)
    if not isinstance(attack, AttackPlugin):
        raise BenchError(f"attack {name!r} is not an attacks.base.AttackPlugin subclass")
    return attack


def make_defense(name: str, params: dict[str, Any] | None) -> Defense:
    """Build a defense; a config table with ``plugin = "<name>"`` defines a named variant."""
    params = dict(params or {})
    plugin = params.pop("plugin", name)
    if not isinstance(plugin, str):
        raise BenchError(f"[defenses.{name}] plugin must be a defense name, not {plugin!r}")
    defense = build(DEFENSES, plugin, params)
    if plugin != name:
        defense.hparams = {"plugin": plugin, **defense.hparams}
        defense.registered_name = name
    if not isinstance(defense, Defense):
        raise BenchError(f"defense {name!r} is not a defenses.base.Defense subclass")
    return defense


@dataclass
class FitContext:
    """What a trainable defense may need to know about the grid it will be evaluated in."""

    spec: DatasetPlugin
    attack: str
    attack_plugin: AttackPlugin
    eps: float
    device: torch.device
    seed: int


def accuracies(clean: torch.Tensor, adv: torch.Tensor, dclean: torch.Tensor, dadv: torch.Tensor
               ) -> dict[str, float]:
    """Accuracies from per-sample correctness, each with a Wilson 95% interval."""
    out = {}
    for name, ok in (("clean_acc", clean), ("adv_acc", adv), ("defended_clean_acc", dclean),
                     ("defended_adv_acc", dadv)):
        k, n = int(ok.sum()), len(ok)
        out[name] = k / n
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson(k, n)
    return out


def bits(mask: torch.Tensor) -> str:
    """Per-sample booleans as a hex string (stored so worst-case rows can be derived later)."""
    padded = torch.nn.functional.pad(mask.to(torch.uint8).cpu(), (0, (-len(mask)) % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return bytes((padded.view(-1, 8) * weights).sum(1).tolist()).hex()


def unbits(hexstr: str, n: int) -> torch.Tensor:
    raw = torch.tensor(list(bytes.fromhex(hexstr)), dtype=torch.uint8)
    return ((raw.unsqueeze(1) >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten()[:n].bool()


@dataclass
class Group:
    """Cells that share adversarial examples: one (attack, eps, threat) and its pending defenses."""

    attack: str
    eps: float | None
    threat: str
    params: dict[str, Any]
    todo: dict[str, str]  # defense name -> cell key


@dataclass
class Prepared:
    """Everything a group needs, picklable, so an executor can ship it to another process."""

    spec: DatasetPlugin
    test: Split
    classifier: nn.Module
    defenses: dict[str, Defense]
    base: dict[str, Any]
    clean_pred: torch.Tensor
    classifier_ms: float | None


class Worker:
    """Computes the records of a group; holds no store, so it can run in any process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.device_label = device_name(self.device)
        self.attacks = {n: make_attack(n, cfg.attack_params.get(n)) for n in cfg.attack}
        self.check_cache: dict[tuple, Any] = {}  # probes shared by the cells of one process

    def batches(self, n: int):
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
        return int(stable_hash([self.cfg.seed, *parts], 8), 16)

    def execute(self, prep: Prepared, group: Group) -> Iterator[dict[str, Any]]:
        """Yield each cell's record as soon as it is computed (so it can be stored at once)."""
        cfg, test, classifier = self.cfg, prep.test, prep.classifier.to(self.device)
        attack = self.attacks[group.attack]
        clean_ok = prep.clean_pred == test.y
        if group.threat == "gray":  # crafted on the bare classifier: shared by every defense
            shared = self.craft(classifier, attack, prep, group)
            shared_pred = self.predict(classifier, shared[0])
        for dname, key in group.todo.items():
            d = prep.defenses[dname].to(self.device).eval()
            model = attack_model(group.threat, classifier, d, cfg.eot_samples)
            if group.threat == "gray":
                (adv, attack_timer), adv_pred = shared, shared_pred
            else:
                adv, attack_timer = self.craft(model, attack, prep, group, defense=d)
                adv_pred = self.predict(classifier.eval(), adv)
            adv_ok = adv_pred == test.y
            rec = self.evaluate_defense(d.eval(), classifier.eval(), test, adv, prep.clean_pred, adv_pred)
            dc, da = rec.pop("_dc"), rec.pop("_da")
            rec.update(prep.base, cell_key=key, defense=dname, defense_params=d.hparams,
                       attack=group.attack, attack_params=group.params, norm=attack.norm, eps=group.eps,
                       iterative=attack.iterative,
                       threat=group.threat, eot_samples=cfg.eot_samples if group.threat == "bpda-eot" else None,
                       classifier_ms_per_sample=prep.classifier_ms,
                       attack_ms_per_sample=attack_timer.ms_per_sample(),
                       max_linf=(adv - test.x).abs().amax().item(),
                       correct={"clean": bits(clean_ok), "adv": bits(adv_ok), "defended_clean": bits(dc),
                                "defended_adv": bits(da)},
                       device=self.device_label, time=time.time())
            rec.update(accuracies(clean_ok, adv_ok, dc, da))
            rec["checks"] = checks.evaluate(self, rec, d, model, test, adv, group.eps)
            yield rec

    def craft(self, model, attack: AttackPlugin, prep: Prepared, group: Group, defense: Defense | None = None):
        timer, test = BatchTimer(self.device, self.cfg.warmup), prep.test
        out = []
        for a, b in tqdm(self.batches(len(test)), desc=f"{group.attack} eps={group.eps} {group.threat}",
                         disable=None, leave=False):
            torch.manual_seed(self.seed_for("attack", group.attack, group.eps, a))
            if defense is not None and defense.randomized:
                defense.seed(self.seed_for("attack-defense", group.attack, group.eps, a))
            xb, yb = test.x[a:b].to(self.device), test.y[a:b].to(self.device)
            out.append(timer(lambda: attack.perturb(model, xb, yb, group.eps, prep.spec), b - a).cpu())
        return torch.cat(out), timer

    def evaluate_defense(self, d: Defense, classifier, test: Split, adv: torch.Tensor,
                         clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> dict[str, Any]:
        timer = BatchTimer(self.device, self.cfg.warmup)
        preds, shown = {}, {}
        for tag, xs, undefended in (("clean", test.x, clean_pred), ("adv", adv, adv_pred)):
            out = []
            for a, b in self.batches(len(xs)):
                xb = xs[a:b].to(self.device)
                if d.randomized:
                    d.seed(self.seed_for("defense", tag, a))
                with torch.no_grad():
                    xd = timer(lambda: d(xb), b - a)
                    # An identity defense returns its input object: its predictions are known.
                    out.append(undefended[a:b] if xd is xb else classifier(xd).argmax(1).cpu())
                if a == 0:
                    shown[tag] = xd[:SAMPLES].detach().cpu()
            preds[tag] = torch.cat(out)
        samples = {"clean": test.x[:SAMPLES], "adv": adv[:SAMPLES], "defended_adv": shown["adv"],
                   "label": test.y[:SAMPLES], "pred_clean": clean_pred[:SAMPLES],
                   "pred_adv": adv_pred[:SAMPLES], "pred_defended_adv": preds["adv"][:SAMPLES]}
        return {"defense_ms_per_sample": timer.ms_per_sample(), "timing_batches": len(timer.timed),
                "defense_randomized": d.randomized, **getattr(d, "fit_info", {}),
                "_dc": preds["clean"] == test.y, "_da": preds["adv"] == test.y, "_samples": samples}


class Runner(Worker):
    """The driver: validates, prepares each dataset, runs groups through an executor, stores."""

    def __init__(self, cfg: Config, argv: list[str]) -> None:
        super().__init__(cfg)  # resolves the device and every attack: errors before any work
        self.argv = argv
        self.specs = [DATASETS.get(n)() for n in cfg.dataset]
        for n in [cfg.classifier] if cfg.classifier else []:
            CLASSIFIERS.get(n)
        for table, reg in ((cfg.defense_params, DEFENSES), (cfg.attack_params, ATTACKS)):
            for name, params in table.items():
                if not name.startswith("torchattacks:") and "plugin" not in params:
                    reg.get(name)
        for n in cfg.defenses:
            make_defense(n, cfg.defense_params.get(n))
        self.recipe = check_recipe(cfg.classifier_recipe)
        if cfg.classifier_weights and not Path(cfg.classifier_weights).is_file():
            raise BenchError(f"classifier weights {cfg.classifier_weights} do not exist")
        self.done = {} if cfg.rerun else {r.get("cell_key"): r for r in iter_records(Path(cfg.results_dir))}
        self.writer = RunWriter(Path(cfg.results_dir), cfg.to_dict(), make_env(argv, self.device, cfg.seed))
        self.records: list[dict[str, Any]] = []

    def run(self, executor: Any = None) -> list[dict[str, Any]]:
        torch.manual_seed(self.cfg.seed)
        for spec in self.specs:
            prep, groups = self.prepare(spec)
            if groups:
                (executor or LocalExecutor()).run(self, prep, groups)
            self.worst_case_rows(prep.base, len(prep.test))
        return self.records

    def eps_values(self, spec: DatasetPlugin, attack: AttackPlugin) -> list[float | None]:
        if not attack.uses_eps:
            return [None]
        return self.cfg.eps or [spec.default_eps]

    def prepare(self, spec: DatasetPlugin) -> tuple[Prepared, list[Group]]:
        """Load data and classifier, train what is needed, list the groups still to compute."""
        cfg = self.cfg
        data: Data = spec.load(Path(cfg.data_root), cfg.offline)
        print(f"[data] {data.name}: train {len(data.train)} from {data.train.source}; "
              f"test {len(data.test)} from {data.test.source}")
        n = min(cfg.limit or len(data.test), len(data.test))
        test = Split(data.test.x[:n], data.test.y[:n], data.test.source)
        clf_name = cfg.classifier or spec.default_classifier
        weights = Path(cfg.classifier_weights) if cfg.classifier_weights else None
        classifier, clf_info = get_classifier(clf_name, spec, data, self.recipe, cfg.seed, self.device,
                                              Path(cfg.cache_dir), weights)
        # Single-step attacks first, so iterative ones can be checked against them.
        order = sorted(self.attacks, key=lambda k: self.attacks[k].iterative)
        eps_all = [e for a in order for e in self.eps_values(spec, self.attacks[a]) if e is not None]
        first = next((k for k in order if self.attacks[k].uses_eps), None)
        ctx = FitContext(spec, first or "fgsm", self.attacks[first] if first else make_attack("fgsm", None),
                         max(eps_all) if eps_all else spec.default_eps, self.device, cfg.seed)
        built: dict[str, Defense] = {}
        for name in cfg.defenses:
            d = make_defense(name, cfg.defense_params.get(name))
            d.setup(spec)
            if hasattr(d, "bind"):
                d.bind(ctx)
            built[name] = d
        base = {"dataset": data.name, "classifier": clf_name, "seed": cfg.seed, "n": n,
                "limit": cfg.limit, "train_source": data.train.source, "test_source": data.test.source,
                "n_train": len(data.train), "n_test": len(data.test), "data_fingerprint": data.fingerprint,
                "run_id": self.writer.run_id, **clf_info}
        groups = []
        for attack_name in order:
            attack = self.attacks[attack_name]
            for eps in self.eps_values(spec, attack):
                params = attack.effective_params(eps, spec)
                for threat in cfg.threat:
                    todo = {}
                    for dname, d in built.items():
                        key = stable_hash({"dataset": data.name, "data": data.fingerprint, "n": n,
                                           "classifier": clf_name, "classifier_hash": clf_info["classifier_hash"],
                                           "defense": dname, "defense_params": d.hparams, "attack": attack_name,
                                           "attack_params": params, "eps": eps, "threat": threat,
                                           "seed": cfg.seed})
                        if key in self.done:
                            self.records.append(self.done[key])
                        else:
                            todo[dname] = key
                    if todo:
                        groups.append(Group(attack_name, eps, threat, params, todo))
        needed = {d for g in groups for d in g.todo}
        for name in (n for n in built if n in needed):  # train once, in the driver, before fan-out
            self.ensure_fitted(built[name], name, classifier, clf_info, data, ctx)
        timer = BatchTimer(self.device, cfg.warmup)
        clean_pred = self.predict(classifier, test.x, timer)
        return Prepared(spec, test, classifier, built, base, clean_pred, timer.ms_per_sample()), groups

    def store(self, rec: dict[str, Any]) -> None:
        """Append one finished cell (the driver is the only writer)."""
        if rec["cell_key"] in {r.get("cell_key") for r in self.records}:
            return  # a retried task delivered a cell twice
        checks.versus_fgsm(rec, self.records)
        samples = rec.pop("_samples", None)
        if samples is not None:
            rec["samples"] = self.writer.save_samples(rec["cell_key"], samples)
        self.writer.append(rec)
        self.records.append(rec)
        print(f"[cell] {rec['dataset']} {rec['attack']} eps={rec['eps']} {rec['threat']} {rec['defense']}: "
              f"clean {rec['clean_acc']:.3f} adv {rec['adv_acc']:.3f} defended clean "
              f"{rec['defended_clean_acc']:.3f} defended adv {rec['defended_adv_acc']:.3f}"
              + (f" ({rec['defense_ms_per_sample']:.3g} ms/sample)" if rec.get("defense_ms_per_sample")
                 is not None else "") + "".join(f" [warning: {c}]" for c in rec.get("checks", [])))

    def worst_case_rows(self, base: dict[str, Any], n: int) -> None:
        """Per-sample worst case over the grid's attacks: robust only if every attack fails."""
        groups: dict[tuple, list[dict]] = {}
        for r in self.records:
            if r.get("dataset") == base["dataset"] and r.get("attack") != "worst" and r.get("correct"):
                groups.setdefault((r["defense"], r["threat"], r["eps"]), []).append(r)
        for (defense, threat, eps), recs in sorted(groups.items(), key=str):
            if len({r["attack"] for r in recs}) < 2:
                continue
            recs = sorted(recs, key=lambda r: r["attack"])
            key = stable_hash({"worst": sorted(r["cell_key"] for r in recs)})
            if key in self.done:
                self.records.append(self.done[key])
                continue
            both = {k: torch.stack([unbits(r["correct"][k], n) for r in recs]).all(0)
                    for k in ("clean", "adv", "defended_clean", "defended_adv")}
            rec = {**base, "cell_key": key, "defense": defense,
                   "defense_params": recs[0].get("defense_params"), "attack": "worst",
                   "attack_params": {"attacks": [r["attack"] for r in recs]}, "eps": eps, "threat": threat,
                   "norm": recs[0].get("norm"), "device": recs[0].get("device"), "time": time.time(),
                   "defense_ms_per_sample": recs[0].get("defense_ms_per_sample"),
                   "checks": sorted({c for r in recs for c in r.get("checks", [])}),
                   "correct": {k: bits(v) for k, v in both.items()}}
            rec.update(accuracies(both["clean"], both["adv"], both["defended_clean"], both["defended_adv"]))
            self.store(rec)

    def ensure_fitted(self, d: Defense, name: str, classifier, clf_info, data: Data, ctx: FitContext) -> Defense:
        if not d.trainable or getattr(d, "_fitted", False):
            return d.to(self.device).eval()
        fit = {k: v for k, v in d.hparams.items() if d.fit_params is None or k in d.fit_params}
        plugin = f"{type(d).__module__}.{type(d).__qualname__}"
        key = stable_hash({"defense": plugin, "params": fit, "classifier": clf_info["classifier_hash"],
                           "data": data.fingerprint, "seed": self.cfg.seed})
        safe = type(d).__name__
        path = Path(self.cfg.cache_dir) / "defenses" / f"{data.name}-{safe}-{key}.pt"
        if path.is_file():
            load_state(d, path, what=f"cached {name} checkpoint")
            d.fit_info = {"defense_source": f"cache:{path}"}
        else:
            print(f"[defense] training {name} on {len(data.train)} {data.name} images …")
            t0 = time.perf_counter()
            d.to(self.device).train()
            info = d.fit(data.train, classifier, device=self.device, seed=self.cfg.seed, eps=ctx.eps) or {}
            info["fit_seconds"] = time.perf_counter() - t0
            save_state(d, path, {"defense": name, "params": d.hparams, **info})
            d.fit_info = {"defense_source": f"trained:{path}", **info}
        d._fitted = True
        return d.to(self.device).eval()


class LocalExecutor:
    """Runs the groups one after another in this process, storing each cell as it finishes."""

    def run(self, runner: Runner, prep: Prepared, groups: list[Group]) -> None:
        total = sum(len(g.todo) for g in groups)
        with tqdm(total=total, desc=f"{prep.base['dataset']} cells", disable=None, leave=False) as bar:
            for group in groups:
                for rec in runner.execute(prep, group):
                    runner.store(rec)
                    bar.update(1)
