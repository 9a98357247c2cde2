"""Every registered plugin is tested automatically (parametrised over the registries)."""

import pytest
import torch
from fixtures import write_dataset

import attacks  # noqa: F401
import defenses  # noqa: F401
from bench.builtin import classifiers, data  # noqa: F401
from bench.core.registry import ATTACKS, CLASSIFIERS, DATASETS, DEFENSES, build
from bench.run import contract


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_loads_local_files_as_nchw_unit_range(name, tmp_path):
    write_dataset(name, tmp_path)
    spec = DATASETS.get(name)()
    d = spec.load(tmp_path, offline=True)
    for split in (d.train, d.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == spec.shape
        assert 0 <= split.x.min() and split.x.max() <= 1
        assert split.y.dtype == torch.int64 and len(split.y) == len(split.x)
        assert split.source  # every split says where it came from
    assert len(d.fingerprint) == 16


@pytest.mark.parametrize("name", CLASSIFIERS.names())
def test_classifier_maps_unit_images_to_logits(name):
    cls = CLASSIFIERS.get(name)
    shape = cls.example_shape
    model = cls(shape, 10, (0.5,) * shape[0], (0.25,) * shape[0]).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    assert cls.__doc__ and "Example" in cls.__doc__


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_contract(name, mnist_setup):
    spec, d, clf = mnist_setup
    defense = build(DEFENSES, name, DEFENSES.get(name).test_params)
    defense.setup(spec)
    if defense.trainable:
        from bench.builtin.data import Split

        defense.fit(Split(d.train.x[:256], d.train.y[:256], "subset"), clf, device=torch.device("cpu"), seed=0, eps=0.3)
    defense.eval()
    x = torch.rand(5, *spec.shape)
    with torch.no_grad():
        out = defense(x)
    # The check every cell runs (bench.run.contract): shape, dtype, device, finite; and no range flag.
    low, high = contract.defense_output(name, "test", x, out)
    assert not contract.out_of_range(low, high)
    assert type(defense).__doc__ and "Example" in type(defense).__doc__
    if defense.randomized:
        # Its randomness is the base class's generator: a seed fixes the next draws, and a pickled
        # copy (what an executor ships to a worker) continues the same stream.
        import copy
        import pickle

        with torch.no_grad():
            defense.seed(7)
            first = defense(x)
            defense.seed(7)
            assert torch.equal(defense(x), first)
            defense.seed(7)
            defense(x)
            shipped = pickle.loads(pickle.dumps(defense))
            assert torch.equal(shipped(x), defense(x)) and torch.equal(copy.deepcopy(shipped)(x), shipped(x))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_respects_budget_and_range(name, mnist_setup):
    from bench.run.plan import make_attack

    spec, d, clf = mnist_setup
    attack = contract.checked_attack(name, make_attack(name, None))  # as a worker runs it
    x, y = d.test.x[:3], d.test.y[:3]
    eps = 0.1
    adv = attack.perturb(clf, x, y, eps if attack.uses_eps else None, spec)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    if attack.uses_eps:
        assert (adv - x).abs().max() <= eps + 1e-6
    assert type(attack).__doc__ and "Example" in type(attack).__doc__


def test_generic_torchattacks_attack(mnist_setup):
    from bench.core.errors import BenchError
    from bench.run.plan import make_attack

    spec, d, clf = mnist_setup
    att = make_attack("torchattacks:MIFGSM", {"steps": 3})
    adv = att.perturb(clf, d.test.x[:4], d.test.y[:4], 0.1, spec)
    assert (adv - d.test.x[:4]).abs().max() <= 0.1 + 1e-6
    with pytest.raises(BenchError, match=r"available: .*PGD"):
        make_attack("torchattacks:NoSuchAttack", None)
    with pytest.raises(BenchError, match=r"invalid parameter.*bogus"):
        make_attack("torchattacks:PGD", {"bogus": 1})
