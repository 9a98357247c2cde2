"""bench.record: the one bitmap codec and the per-sample worst case."""
import numpy as np
import pytest
import torch

from bench.core import record


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_bitmaps_round_trip(n):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    text = record.encode(mask)
    assert len(text) == 2 * ((n + 7) // 8)
    assert (record.decode(text, n) == mask.numpy()).all()
    assert record.encode(mask.numpy()) == text
    with pytest.raises(ValueError):
        record.decode(text, n + 8)


def test_stored_reference_bitmaps_decode():
    """A bitmap written by the pre-codec encoder of the committed records still decodes: 0x80 is
    image 0 right, the rest wrong."""
    assert record.decode("80", 3).tolist() == [True, False, False]


def test_worst_case_is_right_only_where_every_cell_is():
    a = {k: record.encode(np.array([1, 1, 0, 1], bool)) for k in record.OUTCOMES}
    b = {k: record.encode(np.array([1, 0, 1, 1], bool)) for k in record.OUTCOMES}
    worst = record.worst_case([a, b], 4)
    assert set(worst) == set(record.OUTCOMES)
    assert worst["defended_adv"].tolist() == [True, False, False, True]
