"""bench.identity: keys, and grouping records by what they share."""
from bench.core import identity


def cell(**kw):
    base = dict(data={"dataset": "mnist", "fingerprint": "f"}, n=10, classifier="c", classifier_hash="h",
                defense="d", defense_params={}, defense_fit=None, defense_weights=None, attack="pgd",
                attack_params={"steps": 40, "alpha": 0.01, "random_start": True}, eps=0.3, norm="Linf",
                attack_labels="true", threat="gray", eot_samples=None, seed=0, batch_size=8, device_type="cpu")
    base.update(kw)
    return {"identity": identity.cell_identity(**base)}


def test_group_key_varies_exactly_the_named_aspects():
    a, b = cell(), cell(defense="e", defense_weights="w")
    assert identity.group_key(a, ("defense",)) == identity.group_key(b, ("defense",))
    assert identity.group_key(a) != identity.group_key(b)
    fgsm = cell(attack="fgsm", attack_params={})
    assert identity.group_key(a, ("attack",)) == identity.group_key(fgsm, ("attack",))
    assert identity.group_key(a, ("defense",)) != identity.group_key(fgsm, ("defense",))
    more = cell(attack_params={"steps": 200, "alpha": 0.002, "random_start": True}, n=20)
    assert identity.group_key(a, ("budget", "n")) == identity.group_key(more, ("budget", "n"))
    other = cell(attack_params={"steps": 40, "alpha": 0.01, "random_start": False})
    assert identity.group_key(a, ("budget", "n")) != identity.group_key(other, ("budget", "n"))


def test_a_record_without_identity_is_grouped_by_the_fields_it_has():
    a = {"dataset": "mnist", "defense": "d", "attack": "pgd", "eps": 0.3, "n": 5, "defense_weights_hash": "w1"}
    b = {**a, "defense_weights_hash": "w2"}
    assert identity.of_record(a)["data"] == {"dataset": "mnist"}
    assert identity.group_key(a) != identity.group_key(b)  # two trainings are two cells
    assert identity.group_key(a, ("defense",)) == identity.group_key(b, ("defense",))
    assert identity.group_key({**a, "eps": float("nan")}) == identity.group_key({k: v for k, v in a.items() if k != "eps"})


def test_aspect_of_matches_nested_fields():
    assert identity.aspect_of("attack_params.steps", "attack")
    assert identity.aspect_of("attack_params.steps", "budget") and not identity.aspect_of("attack_params.random_start", "budget")
    assert identity.aspect_of("defense_weights", "defense") and not identity.aspect_of("defensex", "defense")
