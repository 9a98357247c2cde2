import time

import torch

from bench.run.timing import BatchTimer


def test_cpu_timer_medians_per_sample_and_skips_warmup():
    t = BatchTimer(torch.device("cpu"), warmup=1)
    assert t(lambda: time.sleep(0.05) or "first", 1) == "first"   # slow warm-up batch
    for _ in range(3):
        t(lambda: time.sleep(0.002), 2)
    assert len(t.timed) == 3
    ms = t.ms_per_sample()
    assert 0.9 <= ms < 10  # ~1 ms per sample; the 50 ms warm-up batch is excluded


def test_single_batch_is_kept_even_with_warmup():
    t = BatchTimer(torch.device("cpu"), warmup=1)
    t(lambda: time.sleep(0.02), 4)  # the only batch: kept, ~5 ms per sample
    assert len(t.timed) == 1 and 4 <= t.ms_per_sample() < 50
