"""Progress that a user can see anywhere: tqdm on a terminal, periodic log lines elsewhere.

tqdm disables itself when stderr is not a terminal (CI, ``nohup``, Ray workers), so a
one-hour training would print nothing for an hour. ``progress`` keeps tqdm on a terminal and
otherwise prints one line every ``every`` seconds (and at the end) with the rate and an ETA.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_EVERY_S = 30.0


def is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _LogBar(Generic[T]):
    """The subset of tqdm's interface the trainers use, printing plain lines."""

    def __init__(
        self, iterable: Iterable[T], desc: str, total: int | None, every: float, size: Callable[[T], int] | None = None
    ) -> None:
        self.iterable, self.desc, self.every, self.size = iterable, desc, every, size
        self.total = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
        self.postfix = ""
        self.t0 = self.last = time.perf_counter()
        self.n = 0

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def _line(self, final: bool = False) -> None:
        dt = time.perf_counter() - self.t0
        rate = self.n / dt if dt > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        eta = f", ~{(self.total - self.n) / rate:.0f} s left" if self.total and rate > 0 and not final else ""
        print(
            f"[progress] {self.desc}: {self.n}{of} in {dt:.0f} s ({rate:.2f}/s{eta})"
            + (f" {self.postfix}" if self.postfix else ""),
            file=sys.stderr,
            flush=True,
        )

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1 if self.size is None else self.size(item)
            now = time.perf_counter()
            if now - self.last >= self.every:
                self.last = now
                self._line()
        if self.n and time.perf_counter() - self.t0 >= self.every:  # quiet for short loops
            self._line(final=True)

    def close(self) -> None:
        pass


def progress(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    every: float = LOG_EVERY_S,
    size: Callable[[T], int] | None = None,
):
    """Iterate with a progress display: tqdm on a terminal, a line every ``every`` s otherwise.
    ``size``: how many units an item counts for (a batch's images, ``total`` then counting images)."""
    if is_terminal():
        if size is None:
            return tqdm(iterable, desc=desc, total=total, leave=False)
        return _sized_tqdm(iterable, desc, total, size)
    return _LogBar(iterable, desc, total, every, size)


def _sized_tqdm(iterable: Iterable[T], desc: str, total: int | None, size: Callable[[T], int]) -> Iterator[T]:
    with tqdm(desc=desc, total=total, leave=False) as bar:
        for item in iterable:
            yield item
            bar.update(size(item))


@contextmanager
def heartbeat(desc: str, counts: Any, every: float = LOG_EVERY_S) -> Iterator[None]:
    """A line every ``every`` s while the block runs (one batch of a long attack: AutoAttack's Square
    on 250 images runs for minutes between two batch lines), saying how long it has run and the
    passes made so far (``counts``: an object with ``forward`` and ``backward`` counters)."""
    stop = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        while not stop.wait(every):
            print(
                f"[progress] {desc}: running for {time.perf_counter() - t0:.0f} s, "
                f"{counts.forward:,} forward and {counts.backward:,} backward passes so far",
                file=sys.stderr,
                flush=True,
            )

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
