import os
import pickle

import pytest
import torch
from torch import nn

from bench.core.checkpoint import load_state, save_state
from bench.core.errors import BenchError


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip(tmp_path):
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    save_state(a, tmp_path / "m.pt", {"note": 1})
    load_state(b, tmp_path / "m.pt")
    assert torch.equal(a.weight, b.weight) and (tmp_path / "m.json").is_file()


def test_crafted_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(BenchError, match="not a weights-only checkpoint"):
        load_state(nn.Linear(3, 2), tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Evil(marker), f)
    with pytest.raises(BenchError):
        load_state(nn.Linear(3, 2), tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_corrupted_files_are_refused(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(BenchError, match=r"corrupted|not a"):
        load_state(nn.Linear(3, 2), tmp_path / "bad.pt")


def test_wrong_architecture_and_missing_file(tmp_path):
    save_state(nn.Linear(4, 2), tmp_path / "m.pt")
    with pytest.raises(BenchError, match="does not fit Linear"):
        load_state(nn.Linear(3, 2), tmp_path / "m.pt")
    with pytest.raises(BenchError, match="does not exist"):
        load_state(nn.Linear(3, 2), tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(BenchError, match="not a state dict"):
        load_state(nn.Linear(3, 2), tmp_path / "list.pt")
