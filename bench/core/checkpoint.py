"""Safe checkpoints: weights only, never a pickle that could run code."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from bench.core.errors import BenchError


def inference_state(module: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The state dict without the entries whose names start with one of ``ignore`` (what only
    training needs, e.g. a GAN's discriminator ``"D."``), detached on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if not k.startswith(ignore or ("\0",))}


def state_hash(module: nn.Module, ignore: tuple[str, ...] = ()) -> str:
    """A hash of the tensors inference uses (``ignore`` as for ``inference_state``)."""
    h = hashlib.sha256()
    for k, v in sorted(inference_state(module, ignore).items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_state(module: nn.Module, path: Path, meta: dict | None = None, ignore: tuple[str, ...] = ()) -> None:
    """Atomically write ``module``'s state dict (less ``ignore``d entries; plus a JSON sidecar of ``meta``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(inference_state(module, ignore), tmp)
    os.replace(tmp, path)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def load_state(module: nn.Module, path: Path, what: str = "checkpoint", ignore: tuple[str, ...] = ()) -> nn.Module:
    """Load a weights-only state dict into ``module``; any other content is refused. Entries
    named with an ``ignore`` prefix may be absent (a shipped counterGAN has no discriminator)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BenchError(
            f"{what} {path} is not a weights-only checkpoint; refused to unpickle it ({_first_line(exc)})"
        ) from exc
    except Exception as exc:  # truncated zip, random bytes, …
        raise BenchError(
            f"{what} {path} is corrupted or not a PyTorch file: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{what} {path} is not a state dict of tensors")
    try:
        if ignore:
            missing, unexpected = module.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith(ignore)]
            if missing or unexpected:
                raise RuntimeError(
                    f"Missing key(s): {', '.join(missing[:5])}; unexpected key(s): {', '.join(unexpected[:5])}"
                )
        else:
            module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(s.strip() for s in str(exc).splitlines()[:3])[:300]
        raise BenchError(f"{what} {path} does not fit {type(module).__name__}: {detail}") from exc
    return module
