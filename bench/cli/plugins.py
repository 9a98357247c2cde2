"""``python -m bench list``: every plugin — built-in, or declared by an installed package's entry
point — with its parameters."""

from __future__ import annotations

from dataclasses import asdict

from bench.builtin.classifiers import resolve_recipe
from bench.cli.parser import Parser
from bench.core.registry import ATTACKS, CLASSIFIERS, DATASETS, DEFENSES, doc_line, hyperparameters


def main(argv: list[str]) -> int:
    Parser(prog="python -m bench list").parse_args(argv)
    for title, reg in (
        ("datasets", DATASETS),
        ("classifiers", CLASSIFIERS),
        ("defenses", DEFENSES),
        ("attacks", ATTACKS),
    ):
        print(f"{title}:")
        for name, cls in reg:
            params = ", ".join(f"{k}={v!r}" for k, v in hyperparameters(cls).items())
            print(f"  {name:28s} {doc_line(cls)}" + (f"\n  {'':28s} params: {params}" if params else ""))
            if reg is CLASSIFIERS:  # a classifier's knobs are its training recipe
                recipe = ", ".join(f"{k}={v!r}" for k, v in asdict(resolve_recipe(name, {}, {})).items())
                print(f"  {'':28s} recipe: {recipe}")
        for name, why in sorted(reg.unloadable.items()):  # an installed package's plugin that does not load
            print(f"  {name:28s} (cannot load: {why})")
    print("  torchattacks:<ClassName>     any torchattacks attack, e.g. torchattacks:MIFGSM")
    print("attack suites (each member a cell, plus one per-sample row named after the suite):")
    for name, (members, doc) in sorted(ATTACKS.suites.items()):
        print(f"  {name:28s} {doc}\n  {'':28s} members: {', '.join(members)}")
    print("threat models: gray, white, bpda, bpda-eot, transfer:<classifier>[@seed=N]")
    print("datasets of your own: folder:PATH, npz:PATH")
    return 0
