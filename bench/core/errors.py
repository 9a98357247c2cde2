"""The exception types the CLI turns into one last line: ``BenchError`` (bad input: exit 2), and a
plugin's failures (``bench.run.contract`` raises them): ``ContractError`` (what it returned breaks
the contract: a ``BenchError``) and ``PluginFailed`` (its own code raised: the traceback is shown,
exit 1). They live here, torch-free, so the CLI can catch them before torch is loaded."""

from __future__ import annotations

from pathlib import Path


class BenchError(Exception):
    """A user-facing error: bad input, missing data, refused checkpoint.

    The CLI prints ``error: <message>`` on stderr and exits with status 2
    (``--debug`` shows the traceback). Nothing stored is touched.
    """


class _Where:
    """Where the cells finished before a failure are stored, set by ``bench.api.run``."""

    stored: tuple[int, Path] | None = None

    def stored_in(self, count: int, where: Path) -> None:
        self.stored = (count, where)

    def _tail(self) -> str:
        if self.stored is None:
            return ""
        count, where = self.stored
        if not count:
            return "; no cell of this run had finished"
        return f"; the {count} cell(s) finished before it are stored in {where} (rerun the same command to resume)"


class ContractError(_Where, BenchError):
    """A plugin returned what the contract forbids (wrong shape/dtype/device, NaN/inf): one line, exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message + self._tail()


class PluginFailed(_Where, Exception):
    """A plugin's own code raised; ``__cause__`` is its exception (the traceback to show)."""

    def __init__(self, kind: str, name: str, where: str) -> None:
        super().__init__(kind, name, where)
        self.kind, self.name, self.where = kind, name, where

    def __str__(self) -> str:
        cause = self.__cause__
        what = f"{type(cause).__name__}: {cause}" if cause is not None else "an exception"
        return f"{self.kind} {self.name!r} raised {what} (in {self.where}){self._tail()}"
