"""A defense defined in a file outside the repo runs in the grid and shows up in the report."""

import sys
import textwrap

from conftest import read_records

from bench.cli import main


def test_external_defense_module_end_to_end(run_args, tmp_path, monkeypatch):
    pkg = tmp_path / "ext_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "squeeze.py").write_text(
        textwrap.dedent('''
        import torch
        from defenses.base import Defense

        class BitDepth(Defense):
            """Bit-depth reduction. Example: --defenses ext_pkg.squeeze:BitDepth"""

            def __init__(self, *, bits: int = 3) -> None:
                super().__init__()
                self.levels = 2 ** bits - 1

            def forward(self, x):
                return torch.round(x * self.levels) / self.levels
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ext.toml").write_text(
        "[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n"
        '[defenses."ext_pkg.squeeze:BitDepth"]\nbits = 1\n'
    )
    args = run_args("--defenses", "none,ext_pkg.squeeze:BitDepth", "--attack", "fgsm", "--eps", "0.3")
    args[args.index("--config") + 1] = str(tmp_path / "ext.toml")
    assert main(args) == 0
    recs = {r["defense"]: r for r in read_records(run_args.results)}
    assert recs["ext_pkg.squeeze:BitDepth"]["defense_params"] == {"bits": 1}
    # 1-bit squeezing undoes most of an eps=0.3 FGSM on MNIST: the defense really ran.
    assert recs["ext_pkg.squeeze:BitDepth"]["defended_adv_acc"] > recs["none"]["defended_adv_acc"]
    assert "ext_pkg.squeeze:BitDepth" in (run_args.results / "results.md").read_text()
    sys.modules.pop("ext_pkg.squeeze", None)
    sys.modules.pop("ext_pkg", None)


def test_shipped_example_loads_by_module_path_and_keeps_the_contract():
    import torch

    from bench.core.registry import DEFENSES, build

    name = "examples.gaussian_blur:GaussianBlur"
    assert name not in DEFENSES.names() and DEFENSES.get(name).__name__ == "GaussianBlur"
    blur = build(DEFENSES, name, {"sigma": 1.5})
    x = torch.rand(3, 1, 28, 28)
    before = x.clone()
    out = blur(x)
    assert torch.equal(x, before) and out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert out.std() < x.std() / 2  # it smooths: i.i.d. noise loses most of its variance
    assert torch.allclose(blur(torch.full_like(x, 0.7)), torch.full_like(x, 0.7))  # borders too
