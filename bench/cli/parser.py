"""The command line's parsers: one-line errors (exit 2) and the run flags every subcommand shares."""

from __future__ import annotations

import argparse
from typing import NoReturn

from bench.core.errors import BenchError


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: bench.cli.numerics reads --numerics before argparse does, by its full name.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise BenchError(message)


def run_parser() -> Parser:
    p = Parser(prog="python -m bench", description="Benchmark adversarial defenses side by side.")
    a = p.add_argument
    a("--defenses", help="comma list of defense names or module:Class (default: none)")
    a("--attack", help="comma list: fgsm, pgd, bim, cw, deepfool, autoattack, torchattacks:Name")
    a(
        "--eps",
        help="comma list of L∞ budgets in (0,1]; fractions like 8/255 allowed "
        "(default per dataset: 0.3 MNIST/F-MNIST, 8/255 CIFAR-10)",
    )
    a(
        "--dataset",
        help="comma list: mnist, fashion-mnist, cifar10, folder:PATH (one sub-folder per class; "
        "train/ and test/ or test only), npz:PATH (x_test, y_test[, x_train, y_train]) (default mnist)",
    )
    a("--threat", help="comma list: gray (default), white, bpda, bpda-eot, transfer:<classifier>[@seed=N]")
    a("--eot-samples", type=_int, help="draws of a randomized defense averaged per gradient in bpda-eot (default 8)")
    a(
        "--resubmit",
        type=_int,
        help="classify each adversarial (and clean) image N times through a randomised "
        "defense: robust only if right every time (default 1); the mean over draws "
        "and the majority vote are stored too",
    )
    a(
        "--attack-labels",
        help="craft attacks with the true labels (default, as AutoAttack) or the "
        "classifier's predictions (predicted: no label leaking)",
    )
    a("--limit", type=_int, help="test images to evaluate (default: the whole test split)")
    a(
        "--image-size",
        type=_int,
        help="folder: datasets: resize every image to N×N (default: as stored; "
        "images of several sizes are an error without it)",
    )
    a("--batch-size", type=_int, help="batch size (default 256)")
    a("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    a(
        "--numerics",
        help="portable (default: the same bits on any x86 CPU with AVX2; docs/guides/reproducibility.md, 'Same numbers on "
        "another machine') or native (each library's fastest CPU kernels)",
    )
    a("--seed", type=_int, help="random seed (default 0)")
    a("--results-dir", help="where runs and reports are stored (default results)")
    a("--config", help="TOML config (default: ./bench.toml when present)")
    a("--data-root", help="dataset folder (default data)")
    a("--cache-dir", help="trained classifiers/defenses cache (default ~/.cache/defense-bench)")
    a(
        "--classifier",
        help="a registered architecture (default per dataset) or your own module:Class "
        "(built without arguments, with --classifier-weights)",
    )
    a("--classifier-weights", help="a state dict for --classifier to evaluate instead of training one")
    a("--warmup", type=_int, help="timed batches excluded as warm-up (default 1)")
    a(
        "--offline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="never try to download datasets (--no-offline overrides the config file)",
    )
    a(
        "--rerun",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute cells already stored (--no-rerun overrides the config file)",
    )
    a(
        "--retrain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train classifiers and defenses anew instead of using the shipped zoo (bench/zoo) or the cache "
        '(the result is cached; DefenseGAN\'s own shipped generator is kept: pretrained = "" trains '
        "one; --no-retrain overrides the config file)",
    )
    a(
        "--time-budget",
        type=_int,
        help="seconds this run may compute: then it stores what finished (whole cells and the finished "
        "batches of the cell in progress), says what is left and exits 0; the same command resumes",
    )
    a("--executor", help="local (default) or ray")
    a("--ray-address", help="Ray cluster address (else RAY_ADDRESS, else a local Ray for the run)")
    a("--wandb", help="Weights & Biases logging: disabled (default), offline, online")
    a("--debug", action="store_true", help="show tracebacks")
    return p


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
