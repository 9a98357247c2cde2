"""The grid runner: (dataset × attack × eps × threat × defense) cells → stored records.

Adversarial examples are crafted once per (dataset, attack, eps) in gray-box cells and
reused for every defense; clean predictions once per dataset. A cell already stored (same
identity) is skipped unless ``rerun``; each finished cell is appended at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import attacks  # noqa: F401  (registers the built-in attacks)
import defenses  # noqa: F401  (registers the built-in defenses)
from attacks.base import AttackPlugin
from attacks.generic import TorchattacksAttack
from bench.checkpoint import load_state, save_state, stable_hash, state_hash
from bench.classifiers import check_recipe, get_classifier
from bench.config import Config, resolve_device
from bench.data import Data, DatasetPlugin, Split
from bench.errors import BenchError
from bench.registry import ATTACKS, CLASSIFIERS, DATASETS, DEFENSES, build
from bench.store import RunWriter, iter_records, make_env
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
    defense = build(DEFENSES, name, params)
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


def bits(mask: torch.Tensor) -> str:
    """Per-sample booleans as a hex string (stored so worst-case rows can be derived later)."""
    padded = torch.nn.functional.pad(mask.to(torch.uint8).cpu(), (0, (-len(mask)) % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return bytes((padded.view(-1, 8) * weights).sum(1).tolist()).hex()


def unbits(hexstr: str, n: int) -> torch.Tensor:
    raw = torch.tensor(list(bytes.fromhex(hexstr)), dtype=torch.uint8)
    return ((raw.unsqueeze(1) >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten()[:n].bool()


class Runner:
    def __init__(self, cfg: Config, argv: list[str]) -> None:
        self.cfg, self.argv = cfg, argv
        self.device = resolve_device(cfg.device)
        # Validate every name and parameter before any expensive work starts.
        self.specs = [DATASETS.get(n)() for n in cfg.dataset]
        for n in [cfg.classifier] if cfg.classifier else []:
            CLASSIFIERS.get(n)
        for table, reg in ((cfg.defense_params, DEFENSES), (cfg.attack_params, ATTACKS)):
            for name in table:
                if not name.startswith("torchattacks:"):
                    reg.get(name)
        self.attacks = {n: make_attack(n, cfg.attack_params.get(n)) for n in cfg.attack}
        for n in cfg.defenses:
            make_defense(n, cfg.defense_params.get(n))
        self.recipe = check_recipe(cfg.classifier_recipe)
        if cfg.classifier_weights and not Path(cfg.classifier_weights).is_file():
            raise BenchError(f"classifier weights {cfg.classifier_weights} do not exist")
        self.done = {} if cfg.rerun else {r.get("cell_key"): r for r in iter_records(Path(cfg.results_dir))}
        self.writer = RunWriter(Path(cfg.results_dir), cfg.to_dict(), make_env(argv, self.device, cfg.seed))
        self.records: list[dict[str, Any]] = []

    # ---- helpers -------------------------------------------------------------------------
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

    # ---- the grid -----------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        torch.manual_seed(self.cfg.seed)
        for spec in self.specs:
            self.run_dataset(spec)
        return self.records

    def eps_values(self, spec: DatasetPlugin, attack: AttackPlugin) -> list[float | None]:
        if not attack.uses_eps:
            return [None]
        return self.cfg.eps or [spec.default_eps]

    def run_dataset(self, spec: DatasetPlugin) -> None:
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
        eps_all = [e for a in self.attacks.values() for e in self.eps_values(spec, a) if e is not None]
        first_attack = next((k for k, a in self.attacks.items() if a.uses_eps), "fgsm")
        ctx = FitContext(spec, first_attack, self.attacks.get(first_attack) or make_attack("fgsm", None),
                         max(eps_all) if eps_all else spec.default_eps, self.device, cfg.seed)
        defenses = {}
        for name in cfg.defenses:
            d = make_defense(name, cfg.defense_params.get(name))
            d.setup(spec)
            if hasattr(d, "bind"):
                d.bind(ctx)
            defenses[name] = d
        base = {"dataset": data.name, "classifier": clf_name, "seed": cfg.seed, "n": n,
                "limit": cfg.limit, "train_source": data.train.source, "test_source": data.test.source,
                "n_train": len(data.train), "n_test": len(data.test), "data_fingerprint": data.fingerprint,
                **clf_info}
        clean_timer = BatchTimer(self.device, cfg.warmup)
        clean_pred = self.predict(classifier, test.x, clean_timer)
        clean_ok = clean_pred == test.y
        cells = [(a, e, t) for a in self.attacks for e in self.eps_values(spec, self.attacks[a])
                 for t in cfg.threat]
        bar = tqdm(total=len(cells) * len(defenses), desc=f"{data.name} cells", disable=None, leave=False)
        for attack_name, eps, threat in cells:
            attack = self.attacks[attack_name]
            params = attack.effective_params(eps, spec) if eps is not None or not attack.uses_eps else {}
            todo = {}
            for dname, d in defenses.items():
                key = stable_hash({"dataset": data.name, "data": data.fingerprint, "n": n,
                                   "classifier": clf_name, "classifier_hash": clf_info["classifier_hash"],
                                   "defense": dname, "defense_params": d.hparams, "attack": attack_name,
                                   "attack_params": params, "eps": eps, "threat": threat, "seed": cfg.seed})
                if key in self.done:
                    self.records.append(self.done[key])
                    bar.update(1)
                else:
                    todo[dname] = key
            if not todo:
                continue
            adv, attack_timer = self.craft(classifier, attack, test, eps, spec, attack_name)
            adv_pred = self.predict(classifier, adv)
            adv_ok = adv_pred == test.y
            for dname, key in todo.items():
                d = self.ensure_fitted(defenses[dname], dname, classifier, clf_info, data, ctx)
                rec = self.evaluate_defense(d, classifier, test, adv, clean_pred, adv_pred)
                rec.update(base, run_id=self.writer.run_id, cell_key=key, defense=dname,
                           defense_params=d.hparams, attack=attack_name, attack_params=params,
                           norm=attack.norm, eps=eps, threat=threat,
                           clean_acc=clean_ok.float().mean().item(), adv_acc=adv_ok.float().mean().item(),
                           classifier_ms_per_sample=clean_timer.ms_per_sample(),
                           attack_ms_per_sample=attack_timer.ms_per_sample(),
                           max_linf=(adv - test.x).abs().amax().item(),
                           correct={"clean": bits(clean_ok), "adv": bits(adv_ok),
                                    "defended_clean": rec.pop("_dc"), "defended_adv": rec.pop("_da")},
                           device=self.writer.env["device"], time=time.time())
                rec["samples"] = self.writer.save_samples(key, rec.pop("_samples"))
                self.writer.append(rec)
                self.records.append(rec)
                bar.update(1)
                print(f"[cell] {data.name} {attack_name} eps={eps} {threat} {dname}: clean "
                      f"{rec['clean_acc']:.3f} adv {rec['adv_acc']:.3f} defended clean "
                      f"{rec['defended_clean_acc']:.3f} defended adv {rec['defended_adv_acc']:.3f} "
                      f"({rec['defense_ms_per_sample']:.3g} ms/sample)")
        bar.close()

    def craft(self, classifier, attack: AttackPlugin, test: Split, eps, spec, attack_name: str):
        timer = BatchTimer(self.device, self.cfg.warmup)
        out = []
        for a, b in tqdm(self.batches(len(test)), desc=f"{attack_name} eps={eps}", disable=None, leave=False):
            torch.manual_seed(self.seed_for("attack", attack_name, eps, a))
            xb, yb = test.x[a:b].to(self.device), test.y[a:b].to(self.device)
            out.append(timer(lambda: attack.perturb(classifier, xb, yb, eps, spec), b - a).cpu())
        return torch.cat(out), timer

    def ensure_fitted(self, d: Defense, name: str, classifier, clf_info, data: Data, ctx: FitContext) -> Defense:
        if not d.trainable or getattr(d, "_fitted", False):
            return d.to(self.device).eval()
        key = stable_hash({"defense": name, "params": d.hparams, "classifier": clf_info["classifier_hash"],
                           "data": data.fingerprint, "seed": self.cfg.seed})
        safe = name.replace(":", "_").replace("/", "_")
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
        dc, da = preds["clean"] == test.y, preds["adv"] == test.y
        samples = {"clean": test.x[:SAMPLES], "adv": adv[:SAMPLES], "defended_adv": shown["adv"],
                   "label": test.y[:SAMPLES], "pred_clean": clean_pred[:SAMPLES],
                   "pred_adv": adv_pred[:SAMPLES], "pred_defended_adv": preds["adv"][:SAMPLES]}
        return {"defended_clean_acc": dc.float().mean().item(), "defended_adv_acc": da.float().mean().item(),
                "defense_ms_per_sample": timer.ms_per_sample(), "timing_batches": len(timer.timed),
                "defense_randomized": d.randomized, **getattr(d, "fit_info", {}),
                "_dc": bits(dc), "_da": bits(da), "_samples": samples}
