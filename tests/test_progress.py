"""bench.core.progress: what a long run prints where no terminal shows tqdm (CI, nohup)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from bench.core import progress


def test_batches_count_as_their_images_with_rate_and_time_left(capsys, monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    spans = [(0, 256), (256, 470)]
    for _ in progress.progress(spans, "aa-square eps=0.3 white x", total=470, every=0.0, size=lambda s: s[1] - s[0]):
        time.sleep(0.01)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[progress] aa-square eps=0.3 white x: 256/470 in ")
    assert "s left)" in lines[0]
    assert lines[-1].startswith("[progress] aa-square eps=0.3 white x: 470/470 in ")


def test_heartbeat_names_the_passes_while_a_batch_runs(capsys):
    counts = SimpleNamespace(forward=0, backward=0)
    with progress.heartbeat("aa-square: images 0-256 of 470", counts, every=0.05):
        for _ in range(6):
            counts.forward += 1000
            time.sleep(0.03)
    err = capsys.readouterr().err
    assert "[progress] aa-square: images 0-256 of 470: running for " in err
    assert " forward and 0 backward passes so far" in err
    with progress.heartbeat("quiet", counts, every=10.0):
        pass  # a short block prints nothing
    assert capsys.readouterr().err == ""
