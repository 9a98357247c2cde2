"""bench.core.artifacts: the one load-or-train ladder (classifiers, surrogates and defenses alike)."""

import torch
from torch import nn

from bench.core.artifacts import load_or_train
from bench.core.checkpoint import state_hash


def test_trains_once_then_loads_from_the_cache_and_retrains_when_asked(tmp_path):
    calls = []

    def train_into(module):
        def train():
            calls.append(1)
            with torch.no_grad():
                module.weight.fill_(len(calls))
            return {"fit_seconds": 0.1}

        return train

    ident, key, path = {"what": "toy"}, "k1", tmp_path / "cache" / "toy-k1.pt"
    first = nn.Linear(2, 2)
    how, facts = load_or_train("defense", "d", "toy", ident, key, first, path, train_into(first), zoo_dir=tmp_path)
    assert how == "trained" and facts == {"defense_source": f"trained:{path}", "fit_seconds": 0.1} and path.is_file()
    again = nn.Linear(2, 2)
    how, facts = load_or_train("defense", "d", "toy", ident, key, again, path, train_into(again), zoo_dir=tmp_path)
    assert how == "cache" and facts == {"defense_source": f"cache:{path}"} and len(calls) == 1
    assert state_hash(again) == state_hash(first)
    how, _ = load_or_train(
        "defense", "d", "toy", ident, key, nn.Linear(2, 2), path, train_into(again), retrain=True, zoo_dir=tmp_path
    )
    assert how == "trained" and len(calls) == 2


def test_a_plugins_own_weights_come_before_the_cache(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    how, facts = load_or_train(
        "defense",
        "d",
        "g",
        {},
        "k",
        nn.Linear(2, 2),
        path,
        lambda: {},
        pretrained=lambda: {"defense_source": "own"},
        zoo_dir=tmp_path,
    )
    assert (how, facts) == ("pretrained", {"defense_source": "own"})
