"""DefenseGAN's reconstruction on a GPU: eager vs torch.func vs torch.compile vs CUDA graphs vs its
floor (the L gradient steps of the generator on B·R latents and nothing else), one JSON line per
(width, variant). Its last run is results/gpu/2026-12-04-h200/reconstruction (docs/results/devices.md).

    python -m tools.defensegan_compile --device cuda --out build/defensegan-compile.jsonl

Options: --L 200 --R 10 (the paper's budget), --batch 256, --repeats 5, --widths 0,64 (0: the
shipped generator's width; weights stay random, only time matters), --seconds 300 (a budget:
variants left when it is gone are recorded as skipped), --compile-backend auto (inductor on CUDA,
aot_eager on CPU, where it only checks that the step traces)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.api import DEFENSES, MNIST, BatchTimer, build


def measure(a: argparse.Namespace) -> int:
    """Times DefenseGAN's reconstruction variants; one JSON line per (width, variant) in ``a.out``."""

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    stop = time.perf_counter() + a.seconds
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sink = open(a.out, "a", encoding="utf-8")
    dev_name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    backend = a.compile_backend if a.compile_backend != "auto" else ("inductor" if cuda else "aot_eager")
    spec = MNIST()
    done: set[int] = set()
    for width in [int(w) for w in a.widths.split(",") if w.strip()]:
        params: dict[str, Any] = {"L": a.L, "R": a.R, "seed": 0}
        if width:
            params["width"] = width
        d = build(DEFENSES, "defensegan", params)
        d.setup(spec)  # width 0 = the shipped generator's width (or the recipe's); weights stay random
        if d.width in done:
            continue
        done.add(d.width)
        if time.perf_counter() > stop - 5:
            print(f"[defensegan-compile] width {d.width}: skipped, budget gone", flush=True)
            continue
        d.to(device).eval()
        G, B, R, L, zd = d.G, a.batch, d.R, d.L, d.z_dim
        for p in G.parameters():
            p.requires_grad_(False)
        x = torch.rand(B, *spec.shape, generator=torch.Generator().manual_seed(0)).to(device)
        lrs = [d.lr_at(s, L) for s in range(L)] if hasattr(d, "lr_at") else [d.lr] * L
        base = {
            "width": d.width,
            "L": L,
            "R": R,
            "batch": B,
            "z_dim": zd,
            "device": dev_name,
            "torch": torch.__version__,
            "compile_backend": backend,
        }

        def loss_sum(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return ((G(z) - target) ** 2).flatten(1).mean(1).sum()

        grad_z = torch.func.grad(loss_sum)
        momentum = d.momentum

        def step(z: torch.Tensor, v: torch.Tensor, target: torch.Tensor, lr: float):
            v = momentum * v + grad_z(z, target)
            return z - lr * v, v

        def descent(step_fn: Callable) -> Callable:
            def recon(xb: torch.Tensor, z0: torch.Tensor):
                target = xb.repeat_interleave(R, 0)
                z, v = z0, torch.zeros_like(z0)
                for lr in lrs:
                    z, v = step_fn(z, v, target, lr)
                out = G(z)
                loss = ((out - target) ** 2).flatten(1).mean(1).view(B, R)
                best = loss.argmin(1)
                picked = out.view(B, R, *xb.shape[1:])[torch.arange(B, device=xb.device), best]
                return picked, loss.gather(1, best[:, None]).squeeze(1)

            return recon

        def floor_body(xb: torch.Tensor, z0: torch.Tensor):
            target = xb.repeat_interleave(R, 0)
            z = z0.detach().requires_grad_(True)
            with torch.enable_grad():
                for lr in lrs:
                    (g,) = torch.autograd.grad(((G(z) - target) ** 2).sum(), z)
                    z = (z - lr * g).detach().requires_grad_(True)
            return (z.detach(),)

        def direct(body: Callable) -> Callable:
            return lambda xb: body(xb, d.initial_z(B).to(device))

        def graphed(body: Callable) -> Callable:
            sx, sz = x.clone(), d.initial_z(B).to(device)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    body(sx, sz)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outs = body(sx, sz)

            def replay(xb: torch.Tensor):
                sx.copy_(xb)
                sz.copy_(d.initial_z(B))
                graph.replay()
                return tuple(o.clone() for o in outs)

            return replay

        def compiled_step() -> Callable:
            """One descent step compiled as one graph; with graph breaks if that fails (noted)."""
            state = {"fn": torch.compile(step, backend=backend, fullgraph=True, dynamic=False), "full": True}

            def call(*args):
                try:
                    return state["fn"](*args)
                except Exception as exc:
                    if not state["full"]:
                        raise
                    print(
                        f"[defensegan-compile] fullgraph compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                        "retrying with graph breaks",
                        flush=True,
                    )
                    state.update(fn=torch.compile(step, backend=backend, dynamic=False), full=False)
                    notes.append("fullgraph failed: compiled with graph breaks")
                    return state["fn"](*args)

            return call

        with torch.no_grad():
            ref_out, ref_loss = d.reconstruct(x)
        variants: list[tuple[str, Callable[[], Callable], str]] = [
            ("eager", lambda: lambda xb: d.reconstruct(xb), "the defense as the benchmark runs it"),
            ("eager-func", lambda: direct(descent(step)), "the same descent written with torch.func.grad"),
            ("floor", lambda: direct(floor_body), "L steps of G fwd+bwd on B·R latents, nothing else"),
            ("floor+graphs", lambda: graphed(floor_body), "the floor captured in one CUDA graph"),
            ("graphs", lambda: graphed(descent(step)), "all L steps captured in one CUDA graph"),
            ("compile", lambda: direct(descent(compiled_step())), f"torch.compile(step, backend={backend})"),
            (
                "compile+graphs",
                lambda: graphed(descent(compiled_step())),
                "the compiled steps captured in one CUDA graph",
            ),
        ]
        for name, make, note in variants:
            rec = {**base, "variant": name, "note": note}
            notes: list[str] = []
            if "graphs" in name and not cuda:
                rec.update(status="skipped", note="CUDA graphs need a CUDA device")
            elif name not in ("eager", "floor", "floor+graphs") and getattr(d, "optimizer", "sgd") != "sgd":
                rec.update(status="skipped", note=f"the rewritten descent is momentum SGD, not {d.optimizer}")
            elif time.perf_counter() > stop - (20 if "compile" in name else 3):
                rec.update(status="skipped", note="budget gone")
            else:
                try:
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        fn = make()
                        res = fn(x)  # untimed: compilation, capture, cuDNN autotuning, allocator warm-up
                        if cuda:
                            torch.cuda.synchronize(device)
                        setup = time.perf_counter() - t0
                        timer = BatchTimer(device, 0)
                        for _ in range(a.repeats):
                            if time.perf_counter() > stop:
                                break
                            res = timer(lambda: fn(x), B)
                    rec.update(
                        status="ok", ms_per_sample=timer.ms_per_sample(), runs=timer.timed, setup_s=round(setup, 2)
                    )
                    if name not in ("floor", "floor+graphs"):
                        rec.update(
                            max_abs_diff=(res[0] - ref_out).abs().max().item(),
                            mean_loss=res[1].mean().item(),
                            eager_mean_loss=ref_loss.mean().item(),
                        )
                    if "compile" in name and not cuda:
                        notes.append("CPU dry run: checks the step traces under torch.compile; no compiled speed")
                    rec["note"] = "; ".join([note, *notes])
                except Exception as exc:
                    rec.update(
                        status="failed",
                        note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                    )
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
            print(
                f"[defensegan-compile] width {rec['width']} {name}: {rec['status']} "
                + (f"{rec['ms_per_sample']:.4g} ms/sample" if rec.get("ms_per_sample") else rec.get("note", "")),
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.defensegan_compile", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="build/defensegan-compile.jsonl", help="JSON lines, appended")
    p.add_argument("--L", type=int, default=200)
    p.add_argument("--R", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--widths", default="0,64")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--compile-backend", default="auto")
    return measure(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
