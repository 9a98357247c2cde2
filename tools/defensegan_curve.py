"""DefenseGAN's training curve: defended accuracy vs generator iterations, resumable; ship a generator.

Trains DefenseGAN generators (WGAN-GP, ``defenses.defensegan.WGANGPTrainer``) of several widths
on the offline MNIST split, interleaved in one process (the width with the fewest training
seconds trains next, so every width gets the same compute), and every ``--probe-every``
iterations measures DefenseGAN on a fixed probe — the first ``--probe-n`` test images, clean
and under gray-box FGSM (torchattacks, true labels, crafted once on the classifier alone) — at
reconstruction (``--probe-L``, ``--probe-R``) for each ``--z-inits``. Each probe is one ordinary
record (bench.store.RunWriter) under ``--results-dir``; ``report`` plots them against
``generator_iterations``.

Everything lives in ``--out``: ``w<width>/train.pt`` (the resume checkpoint: both nets, both
Adam states, the RNG state, iteration count, training seconds, written atomically),
``w<width>/gen-it<N>.pt`` (the generator at each probe), ``probes.jsonl``, ``log.txt`` if you
redirect there. Run the same command again and it continues where it stopped, with the same
weights an uninterrupted run would have had (the probes already recorded are not repeated).

    python -m tools.defensegan_curve --widths 32,64 --max-seconds 6000 --out build/defensegan-curve
    python -m tools.defensegan_curve --device cuda --widths 64 --batch-size 50 --lr 1e-4 --max-seconds 240
    python -m tools.defensegan_curve --table [--doc docs/defensegan-recipe.md]  # the curve so far
    python -m tools.defensegan_curve --ship build/defensegan-curve/w32/gen-it0003000.pt [--tag default]
    python -m tools.defensegan_curve --ship best     # the probed snapshot that defends best
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.api import (
    DEFENSES,
    MNIST,
    Defense,
    Record,
    RunWriter,
    accuracies,
    build,
    device_name,
    encode,
    identity,
    make_env,
    sha256_file,
    shipped,
)

CLASSIFIER = ("mnist-cnn", {"epochs": 6, "lr": 1e-3, "batch_size": 64}, 0)  # name, recipe, seed
EPS = 0.3


def make_defense(width: int, args: argparse.Namespace, **over: Any) -> Defense:
    d = build(
        DEFENSES,
        "defensegan",
        {
            "width": width,
            "gan_lr": args.lr,
            "batch_size": args.batch_size,
            "pretrained": "",
            "critic_iters": args.critic_iters,
            **over,
        },
    )
    d.setup(MNIST())
    return d


class Probe:
    """The fixed probe: images, labels, FGSM images, classifier; measures a generator."""

    def __init__(self, data, args: argparse.Namespace, device: torch.device) -> None:
        import torchattacks

        from bench.api import check_recipe, get_classifier

        name, recipe, seed = CLASSIFIER
        for attempt in range(5):  # get_classifier is being reworked by others: retry transient breakage
            try:
                self.model, info = get_classifier(
                    name, MNIST(), data, check_recipe(dict(recipe)), seed, device, Path(args.cache_dir).expanduser()
                )
                break
            except Exception as exc:
                if attempt == 4:
                    raise
                print(f"[curve] get_classifier failed ({type(exc).__name__}: {exc}); retrying in 30 s", flush=True)
                time.sleep(30)
        self.classifier_hash, self.device = info["classifier_hash"], device
        self.x = data.test.x[: args.probe_n].to(device)
        self.y = data.test.y[: args.probe_n].to(device)
        self.x_adv = torchattacks.FGSM(self.model, eps=EPS)(self.x, self.y).detach()
        with torch.no_grad():
            self.clean_ok = self.model(self.x).argmax(1) == self.y
            self.adv_ok = self.model(self.x_adv).argmax(1) == self.y

    def measure(self, d: Defense, batch: int) -> dict[str, Any]:
        d.to(self.device).eval()
        out, t0 = {}, time.perf_counter()
        for key, x in (("defended_clean", self.x), ("defended_adv", self.x_adv)):
            d.seed(0)  # the same restarts for every generator: the curve differs only by G
            with torch.no_grad():
                rec = torch.cat([d(x[i : i + batch]) for i in range(0, len(x), batch)])
                out[key] = self.model(rec).argmax(1) == self.y
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ms = (time.perf_counter() - t0) * 1000 / (2 * len(self.x))
        outcomes = {"clean": self.clean_ok, "adv": self.adv_ok, **out}
        # The runner's own codec and Wilson intervals (bench.core.record), so the log reads like a record.
        return {
            "n": len(self.x),
            "defense_ms_per_sample": ms,
            "correct": {name: encode(ok) for name, ok in outcomes.items()},
            **accuracies(outcomes),
        }


def train_curve(args: argparse.Namespace) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # 1 by default: one core, the other stays free
    try:
        _train_curve(args)
    finally:
        torch.set_num_threads(threads)


def _train_curve(args: argparse.Namespace) -> None:
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = MNIST().load(Path(args.data_root), offline=True)
    widths = [int(w) for w in args.widths.split(",")]
    every = [int(k) for k in args.probe_every.split(",")]
    every = dict(zip(widths, every * len(widths) if len(every) == 1 else every))
    command = [Path(sys.executable).name, "-m", "tools.defensegan_curve", *sys.argv[1:]]
    runs: dict[int, dict[str, Any]] = {}
    for w in widths:
        torch.manual_seed(args.seed)  # G's initial weights depend on the seed only
        d = make_defense(w, args)
        t = d.trainer(device, args.seed)
        ck = out / f"w{w}" / "train.pt"
        meta = {
            "commands": [],
            "probed": [],
            "data_fingerprint": data.fingerprint,
            "data_source": data.train.source,
            "dataset": data.name,
            "device": [],
        }
        if ck.is_file():
            meta = t.load(ck)
            if meta["data_fingerprint"] != data.fingerprint:
                raise SystemExit(
                    f"{ck} was trained on data {meta['data_fingerprint']}, this data is {data.fingerprint}"
                )
            print(f"[curve] width {w}: resumed at iteration {t.iteration} ({t.seconds:.0f} s trained)", flush=True)
        meta["commands"].append(command)
        meta["device"].append(device_name(device))
        # What trained it, per command (a resumed run adds its own): the zoo's provenance is these.
        env = make_env(command, device, args.seed)
        for key, value in (("git_commits", env["git_commit"]), ("cpu_models", env.get("cpu_model"))):
            meta.setdefault(key, []).append(value)
        meta.setdefault("torch_threads", []).append(torch.get_num_threads())
        runs[w] = {"d": d, "t": t, "ck": ck, "meta": meta}
    probe = None if args.no_probe else Probe(data, args, device)
    if probe:
        print(
            f"[curve] probe: {args.probe_n} test images, classifier clean {probe.clean_ok.float().mean():.3f}, "
            f"FGSM {EPS} {probe.adv_ok.float().mean():.3f}",
            flush=True,
        )
    writer = RunWriter(
        Path(args.results_dir), {k: v for k, v in vars(args).items()}, make_env(command, device, args.seed)
    )

    def do_probe(w: int) -> None:
        r, t = runs[w], runs[w]["t"]
        snap = out / f"w{w}" / f"gen-it{t.iteration:07d}.pt"
        t.save(snap.with_suffix(".tmp.pt"), r["meta"])  # then strip to the generator: small snapshots
        ck = torch.load(snap.with_suffix(".tmp.pt"), map_location="cpu", weights_only=True)
        torch.save({k: ck[k] for k in ("G", "iteration", "seconds", "config", "meta")}, snap)
        snap.with_suffix(".tmp.pt").unlink()
        if probe is None or t.iteration in r["meta"]["probed"]:
            return
        for z_init in args.z_inits.split(","):
            d = make_defense(w, args, L=args.probe_L, R=args.probe_R, z_init=z_init, seed=0)
            d.G.load_state_dict(r["d"].G.state_dict())
            res = probe.measure(d, args.probe_batch)
            rec = {
                "dataset": data.name,
                "data_fingerprint": data.fingerprint,
                "classifier": CLASSIFIER[0],
                "classifier_hash": probe.classifier_hash,
                "defense": f"defensegan-w{w}" + ("" if z_init == "paper" else f"-{z_init}"),
                "defense_params": {
                    "plugin": "defensegan",
                    "width": w,
                    "z_init": z_init,
                    "L": d.L,
                    "R": d.R,
                    "lr": d.lr,
                    "momentum": d.momentum,
                    "lr_cut": d.lr_cut,
                    "seed": 0,
                    "z_dim": d.z_dim,
                    "gan_lr": d.gan_lr,
                    "batch_size": d.batch_size,
                    "critic_iters": d.critic_iters,
                },
                "generator_iterations": t.iteration,
                "generator_seconds": round(t.seconds, 1),
                "generator_snapshot": snap.as_posix(),
                "attack": "fgsm",
                "attack_labels": "true",
                "eps": EPS,
                "norm": "Linf",
                "threat": "gray",
                **res,
                "device": device_name(device),
                "device_type": device.type,
                "time": time.time(),
                "run_id": writer.run_id,
                "experiment": "defensegan-curve",
            }
            ident = {
                "kind": "defensegan-curve-probe",
                **{
                    k: rec[k]
                    for k in (
                        "dataset",
                        "data_fingerprint",
                        "classifier_hash",
                        "defense",
                        "defense_params",
                        "generator_iterations",
                        "attack",
                        "attack_labels",
                        "eps",
                        "norm",
                        "threat",
                        "n",
                        "device_type",
                    )
                },
            }
            rec.update(identity=ident, cell_key=identity.key(ident))
            # Stored through the one reader: a probe is a cell record whose generator facts are fit facts.
            writer.append(Record.from_json({**rec, "kind": "cell"}))
            with open(out / "probes.jsonl", "a") as f:
                f.write(json.dumps({k: v for k, v in rec.items() if k != "correct"}) + "\n")
            print(
                f"[curve] w{w} it {t.iteration:>6} ({t.seconds:>6.0f} s) z_init {z_init:<5} L{d.L} R{d.R}: "
                f"defended clean {rec['defended_clean_acc']:.3f}  FGSM {rec['defended_adv_acc']:.3f}  "
                f"({res['defense_ms_per_sample']:.1f} ms/sample)",
                flush=True,
            )
        r["meta"]["probed"].append(t.iteration)
        t.save(r["ck"], r["meta"])

    for w in widths:  # the starting point of each curve (iteration 0 included)
        if runs[w]["t"].iteration % every[w] == 0 and runs[w]["t"].iteration not in runs[w]["meta"]["probed"]:
            do_probe(w)
    stop = time.perf_counter() + args.max_seconds if args.max_seconds else None
    active = [w for w in widths if not args.iterations or runs[w]["t"].iteration < args.iterations]
    last_log = time.perf_counter()
    while active and (stop is None or time.perf_counter() < stop):
        w = min(active, key=lambda w: runs[w]["t"].seconds)  # equal compute for every width
        t = runs[w]["t"]
        until = (t.iteration // every[w] + 1) * every[w]
        if args.iterations:
            until = min(until, args.iterations)
        deadline = time.perf_counter() + args.slice_seconds
        t.train(data.train.x, until, deadline=deadline if stop is None else min(deadline, stop))
        if t.iteration % every[w] == 0:
            do_probe(w)
        else:
            t.save(runs[w]["ck"], runs[w]["meta"])
        if args.iterations and t.iteration >= args.iterations:
            active.remove(w)
        if time.perf_counter() - last_log > 300:
            last_log = time.perf_counter()
            print(
                f"[curve] {dt.datetime.now(dt.UTC):%H:%M:%S} "
                + ", ".join(
                    f"w{v}: it {runs[v]['t'].iteration} ({runs[v]['t'].seconds:.0f} s, "
                    f"{runs[v]['t'].iteration / max(runs[v]['t'].seconds, 1e-9):.2f} it/s, losses "
                    f"{runs[v]['t'].losses()[0]:.3f}/{runs[v]['t'].losses()[1]:.3f})"
                    for v in widths
                ),
                flush=True,
            )
    for w in widths:  # the end point of each curve
        if runs[w]["t"].iteration not in runs[w]["meta"]["probed"]:
            do_probe(w)
    print(
        "[curve] done: "
        + ", ".join(f"w{w}: {runs[w]['t'].iteration} iterations, {runs[w]['t'].seconds:.0f} s" for w in widths)
        + f"; records in {writer.dir}",
        flush=True,
    )


def ship(path: Path, tag: str, dest: Path | None = None) -> Path:
    """Copy a checkpoint's generator into the weights zoo (``dest``: bench/zoo) as the shipped
    generator ``tag``, in the zoo's layout: the weights, and beside them their provenance with the
    generator identity DefenseGAN looks them up by (its key), the sha256, the training commands,
    settings, seconds, device, CPU and threads, and the clean commit that trained it. Refused, with
    nothing written, for a checkpoint no single clean commit trained, or from a dirty tree."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg, meta = ck["config"], ck["meta"]
    # The zoo's provenance names what trained the weights (recorded per training command).
    commits = sorted(set(meta.get("git_commits", [])))
    if len(commits) != 1 or not commits[0] or commits[0].endswith("-dirty"):
        raise SystemExit(
            f"{path}: trained from {commits or 'an unrecorded commit'}; the zoo ships from one clean commit"
        )
    if make_env(sys.argv, torch.device("cpu"), 0)["git_commit"].endswith("-dirty"):
        raise SystemExit("refusing to ship from a dirty tree (commit first)")
    settings = {k: cfg[k] for k in ("width", "z_dim", "batch_size", "critic_iters", "gp_weight")}
    d = build(DEFENSES, "defensegan", {**settings, "pretrained": tag})
    d.setup(MNIST())
    d.G.load_state_dict(ck["G"])  # proves the state fits the architecture before anything is written
    dest = Path(dest or shipped.ZOO_DIR)
    stem = shipped.stem("generator", meta["dataset"], d.generator_name())
    dest.mkdir(parents=True, exist_ok=True)
    weights = dest / f"{stem}.pt"
    torch.save({k: v.detach().cpu().clone() for k, v in d.G.state_dict().items()}, weights)
    probes = []
    log = path.parent.parent / "probes.jsonl"
    if log.is_file():
        keep = (
            "defense",
            "defense_params",
            "n",
            "clean_acc",
            "adv_acc",
            "defended_clean_acc",
            "defended_adv_acc",
            "run_id",
        )
        probes = [
            {k: r.get(k) for k in keep}
            for r in map(json.loads, log.read_text().splitlines())
            if r["defense_params"]["width"] == cfg["width"] and r["generator_iterations"] == ck["iteration"]
        ]
    ident = d.generator_identity(meta["data_fingerprint"])
    prov = {
        "kind": "generator",
        "name": d.generator_name(),
        "file": weights.name,
        "sha256": sha256_file(weights),
        "identity": ident,
        "key": identity.key(ident),
        "dataset": meta["dataset"],
        "data_fingerprint": meta["data_fingerprint"],
        "data_source": meta["data_source"],
        "architecture": type(d.G).__name__,
        "shape": list(d.spec.shape),
        "width": cfg["width"],
        "z_dim": cfg["z_dim"],
        "training": {k: cfg[k] for k in ("lr", "critic_iters", "gp_weight", "batch_size", "seed")},
        "iterations": int(ck["iteration"]),
        "seconds": round(float(ck["seconds"]), 1),
        "train_seconds": round(float(ck["seconds"]), 1),
        "device": sorted(set(meta["device"])),
        "command": meta["commands"][0],
        "commands": meta["commands"],
        "git_commit": commits[0],
        "cpu_model": sorted({str(c) for c in meta.get("cpu_models", [])}),
        "torch_threads": sorted(set(meta.get("torch_threads", []))),
        "shipped_from": path.as_posix(),
        "ship_command": [Path(sys.executable).name, "-m", "tools.defensegan_curve", *sys.argv[1:]],
        "probes_at_this_iteration": probes,
        "torch": torch.__version__,
        "shipped": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (dest / f"{stem}.json").write_text(shipped.text(prov))
    print(
        f"[ship] {weights} ({weights.stat().st_size / 1e6:.1f} MB, width {cfg['width']}, "
        f"{prov['iterations']} iterations, {prov['seconds']:.0f} s) sha256 {prov['sha256'][:12]}…"
    )
    return weights


def best_snapshot(out: Path, z_init: str = "paper") -> Path:
    """The probed snapshot with the highest defended accuracy under attack for ``z_init`` (the
    default's descent start), then the highest defended clean accuracy, then the most iterations."""
    recs = [
        r
        for r in map(json.loads, (out / "probes.jsonl").read_text().splitlines())
        if r["defense_params"]["z_init"] == z_init and Path(r["generator_snapshot"]).is_file()
    ]
    if not recs:
        raise SystemExit(f"no probed snapshot with z_init {z_init} in {out / 'probes.jsonl'}")
    r = max(recs, key=lambda r: (r["defended_adv_acc"], r["defended_clean_acc"], r["generator_iterations"]))
    print(
        f"[ship] best probe: {r['defense']} at {r['generator_iterations']} iterations: defended clean "
        f"{r['defended_clean_acc']:.3f}, under {r['attack']} {r['defended_adv_acc']:.3f} "
        f"(L {r['defense_params']['L']}, R {r['defense_params']['R']}, n {r['n']})"
    )
    return Path(r["generator_snapshot"])


def table(out: Path) -> str:
    """The curve so far as a markdown table (from ``<out>/probes.jsonl``): rows = iterations,
    columns = defense, cells = defended clean / under attack (and training seconds)."""
    recs = {}
    for r in map(json.loads, (out / "probes.jsonl").read_text().splitlines()):
        recs[(r["defense"], r["generator_iterations"])] = r  # a re-probed point: the latest
    names = sorted({d for d, _ in recs}, key=lambda d: (len(d), d))
    lines = ["| iterations | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for it in sorted({i for _, i in recs}):
        cells = [
            f"{r['defended_clean_acc']:.3f} / {r['defended_adv_acc']:.3f} ({r['generator_seconds']:.0f} s)"
            if (r := recs.get((d, it)))
            else ""
            for d in names
        ]
        lines.append(f"| {it:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="32,64", help="generator/critic widths, trained interleaved")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam lr of G and critic (the reference: 1e-4)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--critic-iters", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=0, help="stop after this many seconds (0 = no limit)")
    p.add_argument("--iterations", type=int, default=0, help="stop each width at this many iterations (0 = no limit)")
    p.add_argument("--probe-every", default="250", help="iterations between probes (one value, or one per width)")
    p.add_argument("--no-probe", action="store_true", help="train and checkpoint only")
    p.add_argument("--probe-n", type=int, default=200)
    p.add_argument("--probe-L", type=int, default=50)
    p.add_argument("--probe-R", type=int, default=4)
    p.add_argument("--probe-batch", type=int, default=100)
    p.add_argument("--z-inits", default="paper,prior", help="descent starts to probe: paper, prior")
    p.add_argument("--slice-seconds", type=float, default=60, help="train one width this long before switching")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "defense-bench"))
    p.add_argument("--out", default="build/defensegan-curve", help="work folder: checkpoints, snapshots")
    p.add_argument("--results-dir", default="docs/defensegan-curve")
    p.add_argument(
        "--ship",
        help="copy this checkpoint's generator into the weights zoo (bench/zoo) and exit; "
        "'best' = the probed snapshot in --out that defends best under attack (z_init paper)",
    )
    p.add_argument("--tag", default="default", help="the shipped generator's name (DefenseGAN's `pretrained`)")
    p.add_argument("--table", action="store_true", help="print the curve in --out as a markdown table and exit")
    p.add_argument(
        "--doc",
        type=Path,
        help="with --table: write it into this page between <!-- curve:start --> and <!-- curve:end -->",
    )
    p.add_argument("--ship-dir", type=Path, default=None, help="the zoo to ship into (default: bench/zoo)")
    args = p.parse_args(argv)
    if args.table:
        md = table(Path(args.out))
        if args.doc:  # replace the block between the markers, keep the rest of the page
            from bench.api import fill

            fill(args.doc, "curve", [md])
        print(md)
    elif args.ship:
        path = best_snapshot(Path(args.out)) if args.ship == "best" else Path(args.ship)
        ship(path, args.tag, args.ship_dir)
    else:
        train_curve(args)


if __name__ == "__main__":
    main()
