"""A defense defined in a file outside the repo runs in the grid and shows up in the report."""
import sys
import textwrap

from bench.cli import main
from conftest import read_records


def test_external_defense_module_end_to_end(run_args, tmp_path, monkeypatch):
    pkg = tmp_path / "ext_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "squeeze.py").write_text(textwrap.dedent('''
        import torch
        from defenses.base import Defense

        class BitDepth(Defense):
            """Bit-depth reduction. Example: --defenses ext_pkg.squeeze:BitDepth"""

            def __init__(self, *, bits: int = 3) -> None:
                super().__init__()
                self.levels = 2 ** bits - 1

            def forward(self, x):
                return torch.round(x * self.levels) / self.levels
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ext.toml").write_text('[run]\noffline = true\n[classifier]\nepochs = 1\nbatch_size = 128\n'
                                       '[defenses."ext_pkg.squeeze:BitDepth"]\nbits = 1\n')
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
