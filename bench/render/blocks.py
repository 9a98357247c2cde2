"""The one writer of generated blocks in Markdown files (README's results, headline, devices and
numerics blocks; docs/results/*.md): ``<!-- name:start -->`` … ``<!-- name:end -->`` replaced by
lines a renderer made, the rest of the file kept byte for byte, written atomically. A file without
the block is an error: a generated table never lands somewhere nobody asked for it."""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import BenchError
from bench.store.runs import write_atomic


def markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:start -->", f"<!-- {block}:end -->"


def fill(path: Path, block: str, lines: list[str]) -> Path:
    """Replace the body of ``block`` in ``path`` with ``lines`` (the markers stay)."""
    start, end = markers(block)
    text = path.read_text()
    if start not in text or end not in text:
        raise BenchError(f"{path} has no '{start}' … '{end}' block to fill")
    head, rest = text.split(start, 1)
    write_atomic(path, head + "\n".join([start, *lines, end]) + rest.split(end, 1)[1])
    return path
