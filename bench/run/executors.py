"""Executors: where the groups of a grid run. The driver always stores the records.

* ``local`` — one group after another in this process.
* ``ray``   — each group is a Ray task; the prepared inputs (test split, classifier, trained
  defenses) travel through Ray's object store, so workers need no shared filesystem. Results
  are stored by the driver as they arrive; a failed task is retried (``max_retries``) and a
  cell delivered twice is stored once. A cascade stage's group is sent once the groups of the
  previous stage it starts from have come back (with their outcomes).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from tqdm import tqdm

from bench.core.config import EXECUTORS, Config
from bench.core.errors import BenchError
from bench.core.progress import progress
from bench.run.plan import Group
from bench.run.worker import CellResult, Prepared, Worker


class LocalExecutor:
    """Runs the groups one after another in this process, storing each cell as it finishes."""

    def run(self, runner: Any, prep: Prepared, groups: list[Group]) -> None:
        cells = (r for g in groups for r in runner.worker.execute(prep, g))
        total = sum(len(g.cells) for g in groups)
        for result in progress(cells, f"{prep.base['dataset']} cells", total=total):
            runner.store(result)


def _run_group(
    cfg_dict: dict[str, Any], prep: Prepared, group: Group, threads: int, prior: dict[str, dict[str, Any]] | None = None
) -> list[CellResult]:
    torch.set_num_threads(threads)
    worker = Worker(Config(**cfg_dict))
    prep.prior = {**prep.prior, **(prior or {})}
    return list(worker.execute(prep, group))


def outcomes(result: CellResult) -> dict[str, Any]:
    """What a cascade's next stage needs of a cell's record."""
    return {k: result.record[k] for k in ("correct", "resubmit_correct") if k in result.record}


class RayExecutor:
    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3, threads_per_task: int = 1
    ) -> None:
        try:
            import ray
        except ImportError:
            raise BenchError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from None
        self.ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus, self.max_retries, self.threads = num_cpus, max_retries, threads_per_task

    def start(self) -> None:
        if self.ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address:
            kwargs["address"] = self.address
        elif self.num_cpus:
            kwargs["num_cpus"] = self.num_cpus
        try:
            self.ray.init(**kwargs)
        except Exception as exc:  # a wrong address, a cluster that refuses us …
            raise BenchError(f"cannot start or reach Ray ({self.address or 'local'}): {exc}") from exc

    def run(self, runner: Any, prep: Prepared, groups: list[Group]) -> None:
        ray = self.ray
        self.start()
        gpus = 1 if runner.device.type == "cuda" else 0
        task = ray.remote(num_cpus=self.threads, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=False)(
            _run_group
        )
        prep_ref = ray.put(prep)
        cfg_dict = runner.cfg.to_dict()
        waiting = list(groups)
        pending: dict[Any, Any] = {}  # Ray object ref → the group it computes
        computed: dict[Any, Any] = {}

        def submit() -> None:
            for g in list(waiting):
                needs = {c.after for c in g.cells if c.after is not None and c.after not in prep.prior}
                if needs <= computed.keys():
                    waiting.remove(g)
                    pending[task.remote(cfg_dict, prep_ref, g, self.threads, {k: computed[k] for k in needs})] = g

        submit()
        total = sum(len(g.cells) for g in groups)
        with tqdm(total=total, desc=f"{prep.base['dataset']} cells (ray)", disable=None, leave=False) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    pending.pop(ref)
                    for result in ray.get(ref):
                        runner.store(result)
                        computed[result.record["cell_key"]] = outcomes(result)
                        bar.update(1)
                submit()
        if waiting:
            raise BenchError(f"{len(waiting)} cascade group(s) never got their previous stage's cells")


def make_executor(name: str, address: str | None = None, num_cpus: int | None = None) -> Any:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus)
    raise BenchError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
