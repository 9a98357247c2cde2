"""Numerics modes: what decides the last bits of a CPU result, and deterministic CUDA.

The same code and weights give other last bits on another x86 machine: ATen picks its CPU kernels
by instruction set (``ATEN_CPU_CAPABILITY``), oneDNN by instruction set (``ONEDNN_MAX_CPU_ISA``),
MKL by vendor *and* instruction set. One-pass defenses survive that; DefenseGAN's 50 steps of
momentum descent and AutoAttack's iterations amplify it into other per-image outcomes.

``portable`` (the CLI's default) fixes all three before torch loads its kernels:

* ``ATEN_CPU_CAPABILITY=avx2`` and ``ONEDNN_MAX_CPU_ISA=AVX2`` — a ceiling every x86-64 server
  and desktop since 2013 reaches, so an AVX-512 machine and an AVX2 one run the same kernels;
* ``MKL_CBWR=COMPATIBLE`` — MKL's conditional numerical reproducibility mode, one code path on
  Intel and AMD (``MKL_CBWR=AVX2`` would be honoured on Intel only).

Measured on a 2-core AMD EPYC (docs/guides/reproducibility.md, "Same numbers on another machine"; ``tools/numerics_evidence.py``):
with these settings the default grid is bit-identical under AVX-512 and AVX2 instruction sets,
without them every cell differs in some images; it cost 1.3× the default grid's wall-clock
(70–73 s vs 56–58 s), DefenseGAN 20–23 vs 16–17 ms per image, an APGD-CE cell 1.2×. ``native``
leaves every library to pick its fastest kernels. The thread count is not part of a mode: a
record names it, ``bench verify`` uses it.

The environment variables are read when torch first runs a kernel, so a mode is applied before
torch is imported (``apply``, called by the CLI first thing); ``state`` reports what is really in
force, which is what records and env.json store — a notebook that imported torch first runs
``native`` whatever it asked for, and says so.

On a CUDA device, ``deterministic_cuda`` turns on cuDNN's deterministic algorithms, switches off
its benchmark autotuning (which picks algorithms per call and per shape) and asks torch for
deterministic algorithms (``warn_only``: an operation without one warns rather than stops a run);
``CUBLAS_WORKSPACE_CONFIG`` is set by ``apply`` because cuBLAS reads it when its handle is made.
"""

from __future__ import annotations

import os
import sys
from typing import Any

MODES = ("portable", "native")
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
CUBLAS_WORKSPACE = ":4096:8"  # torch's documented setting for deterministic cuBLAS


def apply(mode: str, environ: Any = None) -> bool:
    """Put ``mode``'s settings into ``environ`` (default: this process's environment, only while
    torch is not loaded: later they would not count). True when ``mode`` is then what a computation
    runs under; False when this process loaded torch under other settings."""
    if mode not in MODES:
        raise ValueError(f"unknown numerics mode {mode!r}; use {' or '.join(MODES)}")
    env = os.environ if environ is None else environ
    if environ is None and "torch" in sys.modules:
        return _portable_env(env) == (mode == "portable")
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if mode == "portable":
        env.update(PORTABLE_ENV)
    # native touches nothing: what the environment says (a user's own ISA settings included) stands,
    # and ``mode_in_force`` reports what that amounts to.
    return True


def _portable_env(env: Any) -> bool:
    return all(env.get(k) == v for k, v in PORTABLE_ENV.items())


def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD`` … from /proc/cpuinfo (else the platform's machine)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.machine() or "unknown"


def cpu_capability() -> str:
    """The instruction set ATen's CPU kernels run at (AVX512, AVX2, DEFAULT …)."""
    import torch

    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return get() if get else "unknown"


def mode_in_force() -> str:
    """``portable`` where its settings are in the environment and ATen runs at their instruction set
    (AVX2) — true only when they were set before torch ran a kernel on a CPU that has AVX2; else
    ``native``."""
    if not _portable_env(os.environ):
        return "native"
    # A CPU without AVX2 (or a non-x86 one) runs ATen below the pinned level: other bits, not portable.
    return "portable" if cpu_capability() == "AVX2" else "native"


def deterministic_cuda() -> dict[str, Any]:
    """Deterministic CUDA from here on (see the module's docstring); what was set."""
    import torch

    # cuBLAS reads this when its handle is made: set here too for a process that imported torch first
    # (a notebook), where ``apply`` could not.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return cuda_state()


def cuda_state() -> dict[str, Any]:
    import torch

    return {
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def state(device_type: str = "cpu") -> dict[str, Any]:
    """What decides the last bits here, as records and env.json store it."""
    out: dict[str, Any] = {"numerics": mode_in_force(), "cpu_vendor": cpu_vendor(), "cpu_capability": cpu_capability()}
    if device_type == "cuda":
        out["cuda_deterministic"] = cuda_state()
    return out
