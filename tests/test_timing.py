import time

import torch

from bench.run.timing import BatchTimer


def test_cpu_timer_medians_per_sample_and_skips_warmup():
    t = BatchTimer(torch.device("cpu"), warmup=1)
    assert t(lambda: time.sleep(0.05) or "first", 1) == "first"  # slow warm-up batch
    for _ in range(3):
        t(lambda: time.sleep(0.002), 2)
    assert len(t.timed) == 3
    ms = t.ms_per_sample()
    assert 0.9 <= ms < 10  # ~1 ms per sample; the 50 ms warm-up batch is excluded


def test_single_batch_is_kept_even_with_warmup():
    t = BatchTimer(torch.device("cpu"), warmup=1)
    t(lambda: time.sleep(0.02), 4)  # the only batch: kept, ~5 ms per sample
    assert len(t.timed) == 1 and 4 <= t.ms_per_sample() < 50


# --- moved from the former tests/test_trust.py ---------------------------------------


def test_cuda_timer_uses_the_chosen_device(monkeypatch):
    """No GPU here: a stand-in torch.cuda records which device and stream the timer uses."""
    from bench.run import timing

    calls = []

    class Event:
        def __init__(self, enable_timing):
            self.at = None

        def record(self, stream):
            calls.append(("record", stream))
            self.at = len(calls)

        def elapsed_time(self, end):
            return 4.0

    class Ctx:
        def __init__(self, dev):
            calls.append(("device", dev))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    fake = type("FakeCuda", (), {})()
    fake.Event = Event
    fake.device = Ctx
    fake.current_stream = lambda dev: f"stream-of-{dev}"
    fake.synchronize = lambda dev=None: calls.append(("sync", dev))
    monkeypatch.setattr(timing.torch, "cuda", fake)
    dev = torch.device("cuda:1")
    t = timing.BatchTimer(dev, warmup=0)
    assert t(lambda: "out", 2) == "out" and t.ms_per_sample() == 2.0
    assert ("device", dev) in calls and ("record", "stream-of-cuda:1") in calls
    assert [c for c in calls if c[0] == "sync"] == [("sync", dev), ("sync", dev)]
