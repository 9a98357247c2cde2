"""Wall-clock per sample: CUDA events with synchronisation on GPU, perf_counter on CPU.

Each batch is timed on its own; the figure reported is the median over batches of
milliseconds per sample, the first ``warmup`` batches excluded when there are more.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class BatchTimer:
    def __init__(self, device: torch.device, warmup: int = 1) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.warmup = warmup
        self.samples: list[float] = []  # ms per sample, one per batch

    def __call__(self, fn: Callable[[], T], n: int) -> T:
        if self.cuda:
            # Events on the chosen device's current stream, and that device synchronised: with
            # --device cuda:1 the work runs there, not on the process's current device.
            with torch.cuda.device(self.device):
                stream = torch.cuda.current_stream(self.device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                # Synchronising before and after keeps queued work from earlier calls out of
                # this batch and this batch's work in it.
                torch.cuda.synchronize(self.device)
                start.record(stream)
                out = fn()
                end.record(stream)
                torch.cuda.synchronize(self.device)
                ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            out = fn()
            ms = (time.perf_counter() - t0) * 1000.0
        self.samples.append(ms / max(n, 1))
        return out

    @property
    def timed(self) -> list[float]:
        return self.samples[self.warmup :] if len(self.samples) > self.warmup else self.samples

    def ms_per_sample(self) -> float | None:
        return statistics.median(self.timed) if self.samples else None
