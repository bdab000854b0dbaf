#!/usr/bin/env python
"""Training and inference speed of medmoe's model against a plain reference implementation.

    python benchmarks/speed.py [--quick] [--out benchmarks/results/speed.md] [--threads N]

Two implementations of the paper's model (identical weights, checked to compute the same outputs and
gradients before anything is timed):

- ``reference``: the model written the obvious way: ``PromptMoE(config, experts="loop")``, one
  decoder module per expert run in a Python loop, the N outputs stacked and mixed with an einsum,
  and ``torch.optim.Adam`` with its defaults.
- ``medmoe``: what ``medmoe train`` runs: ``create_model(config)`` (the
  :class:`~medmoe.model.experts.ExpertBank` with its ``auto`` schedule: grouped kernels for single
  images, expert after expert for CPU batches; router weights applied as the outputs are made;
  sub-pixel last layer without autograd) and :func:`medmoe.engine.train.make_optimizer` (fused Adam).

Measured at 64×64 and 256×256 (``--quick``: 64×64 only, fewer repeats): a training step (forward,
Eq. 6 loss, backward, Adam step; batch 64, also split into forward+backward and the optimizer step),
inference in eval mode under ``torch.inference_mode`` at batch 64 and batch 1, peak resident memory
(each configuration in a fresh subprocess), and the achieved FLOP/s (convolution and matmul FLOPs of
the reference model counted with ``torch.utils.flop_counter``, which over-counts the backward of grouped
transposed convolutions, so the reference's count serves both) as a fraction of this machine's fp32
GEMM rate measured with the same thread count during the run. ``--threads 1 2`` repeats the timings
for each thread count (memory is measured once).

The machine may be shared: the implementations are timed in interleaved rounds (order alternating),
medians are reported, and speed-ups are the median over rounds of the per-round ratio, so a load
change hits both sides of a ratio. The load average before and after is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medmoe.atomic import atomic_write_text
from medmoe.engine.config import TrainConfig
from medmoe.engine.train import make_optimizer
from medmoe.model import ModelConfig, PromptMoE, create_model
from medmoe.model.base import AnomalyModel
from medmoe.model.reference import load_bank_from_decoders

REPO = Path(__file__).resolve().parent.parent
IMPLS = ("reference", "medmoe")
TRAIN_BATCH = 64
TEXT_DIM = 384  # all-MiniLM-L6-v2, the default text encoder
GEMM_SIZE = 2048


@dataclass(frozen=True)
class Plan:
    """Repeats per resolution: timed rounds of training steps, batch-64 and batch-1 inference, and
    forward passes per batch-1 round (their mean is one sample)."""

    train: int
    infer: int
    latency: int
    latency_calls: int


PLANS = {
    "full": {64: Plan(train=15, infer=15, latency=15, latency_calls=10),
             256: Plan(train=5, infer=5, latency=9, latency_calls=3)},
    "quick": {64: Plan(train=4, infer=4, latency=4, latency_calls=5)},
}


@dataclass
class Timings:
    """Seconds per call, one list entry per round, for every implementation."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in IMPLS})
    parts: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {k: [] for k in IMPLS})

    def median(self, impl: str) -> float:
        return statistics.median(self.wall[impl])

    def speedups(self) -> list[float]:
        """Per-round ratio reference time / medmoe time."""
        return [r / m for r, m in zip(self.wall["reference"], self.wall["medmoe"], strict=False)]


# --------------------------------------------------------------------------- models and inputs


def build(config: ModelConfig, impl: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """One implementation with its optimizer (see the module docstring)."""
    tc = TrainConfig()
    if impl == "reference":
        model = PromptMoE(config, experts="loop")
        return model, torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    model = create_model(config)
    return model, make_optimizer(model, tc, torch.device("cpu"))


def copy_reference_weights(reference: nn.Module, medmoe: nn.Module) -> None:
    """Give ``medmoe`` the reference's weights: shared modules by name, experts via the bank loader."""
    shared = {k: v for k, v in reference.state_dict().items() if not k.startswith("experts.")}
    missing, unexpected = medmoe.load_state_dict(shared, strict=False)
    if unexpected or any(not k.startswith("experts.") for k in missing):
        raise RuntimeError(f"state dicts do not match: missing {missing}, unexpected {unexpected}")
    load_bank_from_decoders(medmoe.experts, reference.experts)


def inputs(resolution: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images in [0, 1] ``(B, 1, R, R)``, prompt embeddings ``(B, 384)``, task ids ``(B,)``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, resolution, resolution, generator=g), torch.randn(batch, TEXT_DIM, generator=g),
            torch.randint(0, 5, (batch,), generator=g))


def loss_of(model: AnomalyModel, x: torch.Tensor, e: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """The loss ``medmoe train`` takes: the model's own (Eq. 6 in its value range), α = β = 1."""
    return model.loss(model(x, e), x, tasks, alpha=1.0, beta=1.0).total


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple) -> tuple[float, float]:
    """One step as ``medmoe train`` takes it; returns (forward+backward, optimizer) seconds."""
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, *batch).backward()
    middle = time.perf_counter()
    optimizer.step()
    return middle - started, time.perf_counter() - middle


# --------------------------------------------------------------------------- equivalence


def check_equivalence(models: dict[str, nn.Module], resolution: int) -> dict[str, float]:
    """Same outputs (train and eval mode) and same gradients of the shared modules, or an error.

    Returns the largest absolute output differences and the largest relative gradient-norm error.
    """
    x, e, tasks = inputs(resolution, 8, seed=1)
    report: dict[str, float] = {}
    for mode in ("train", "eval"):
        outs, grads = {}, {}
        for impl, model in models.items():
            model.train(mode == "train")
            model.zero_grad(set_to_none=True)
            out = model(x, e)
            model.loss(out, x, tasks, alpha=1.0, beta=1.0).total.backward()
            outs[impl] = out
            grads[impl] = {k: p.grad for k, p in model.named_parameters() if not k.startswith("experts.")}
        ref, ours = outs["reference"], outs["medmoe"]
        for name in ("x_hat", "u", "score", "router_weights"):
            torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-4, atol=1e-5)
            report[f"{mode} {name}"] = (getattr(ours, name) - getattr(ref, name)).abs().max().item()
        worst = max(((grads["medmoe"][k] - g).norm() / g.norm().clamp_min(1e-30)).item()
                    for k, g in grads["reference"].items())
        if worst > 1e-4:
            raise AssertionError(f"{mode}-mode gradients differ: relative error {worst:.2e}")
        report[f"{mode} gradients (rel.)"] = worst
    for model in models.values():  # equal running statistics again for the timed runs
        model.zero_grad(set_to_none=True)
    copy_reference_weights(models["reference"], models["medmoe"])
    return report


# --------------------------------------------------------------------------- timing


def interleaved(rounds: int, run: Callable[[str], tuple[float, float] | float]) -> Timings:
    """``run(impl)`` for every implementation per round, alternating the order; one warm-up call each."""
    timings = Timings()
    for impl in IMPLS:
        run(impl)
    for r in range(rounds):
        for impl in IMPLS if r % 2 == 0 else reversed(IMPLS):
            result = run(impl)
            parts = result if isinstance(result, tuple) else (result, 0.0)
            timings.parts[impl].append(parts)
            timings.wall[impl].append(sum(parts))
    return timings


def time_training(models: dict, optimizers: dict, resolution: int, rounds: int) -> Timings:
    batch = inputs(resolution, TRAIN_BATCH)
    for model in models.values():
        model.train()
    return interleaved(rounds, lambda impl: train_step(models[impl], optimizers[impl], batch))


def time_inference(models: dict, resolution: int, batch: int, rounds: int, calls: int = 1) -> Timings:
    x, e, _ = inputs(resolution, batch)
    for model in models.values():
        model.eval()

    def run(impl: str) -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            for _ in range(calls):
                models[impl](x, e)
            return (time.perf_counter() - started) / calls

    return interleaved(rounds, run)


def gemm_flops_per_second(repeats: int = 5) -> list[float]:
    """fp32 ``GEMM_SIZE``³ matmul rate with the current thread count, one value per repeat."""
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    a @ b
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        rates.append(2 * GEMM_SIZE**3 / (time.perf_counter() - started))
    return rates


def flops_per_image(model: nn.Module, resolution: int, train: bool) -> float:
    """Convolution and matmul FLOPs per image (batch 2): forward, plus backward when ``train``."""
    x, e, tasks = inputs(resolution, 2)
    model.train(train)
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            loss_of(model, x, e, tasks).backward()
        else:
            with torch.inference_mode():
                model(x, e)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


# --------------------------------------------------------------------------- memory (subprocess)

MEMORY_MODES = {"train": f"training step, batch {TRAIN_BATCH}", "infer64": "inference, batch 64",
                "infer1": "inference, batch 1"}


def probe_memory(impl: str, resolution: int, mode: str) -> dict[str, float | bool]:
    """Run in a fresh process: resident memory after a warm-up call and the peak during two more.

    ``mode``: a key of :data:`MEMORY_MODES`. Steady = weights, optimizer state and caches after the
    warm-up (gradients released); peak = high-water mark of the measured calls (VmHWM, reset through
    ``/proc/self/clear_refs`` where allowed, else the peak since the process started).
    """
    model, optimizer = build(ModelConfig(resolution=resolution, text_dim=TEXT_DIM), impl)
    if mode == "train":
        batch = inputs(resolution, TRAIN_BATCH)
        model.train()

        def call() -> None:
            train_step(model, optimizer, batch)
    else:
        x, e, _ = inputs(resolution, 64 if mode == "infer64" else 1)
        model.eval()

        def call() -> None:
            with torch.inference_mode():
                model(x, e)
    call()
    optimizer.zero_grad(set_to_none=True)
    steady = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    for _ in range(2):
        call()
    return {"steady_mb": steady, "peak_mb": _status_mb("VmHWM"), "peak_reset": reset}


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure_memory(impl: str, resolution: int, mode: str, threads: int) -> dict[str, float | bool] | None:
    """:func:`probe_memory` in a subprocess; ``None`` where ``/proc`` is unavailable.

    glibc's mmap threshold is pinned at 128 KiB there, so every freed tensor buffer goes back to the
    OS and the resident size follows the memory actually in use rather than malloc's caches.
    """
    if not Path("/proc/self/status").is_file():
        return None
    command = [sys.executable, str(Path(__file__).resolve()), "--probe-memory", impl, str(resolution), mode,
               "--threads", str(threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    """CPU, instruction set and software versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", config)
    onednn = re.search(r"MKL-DNN v([\w.]+)", config)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": f"{cpu}; {os.cpu_count()} logical cores, {usable} usable by this process",
        "ISA used by torch": torch.backends.cpu.get_cpu_capability(),
        "software": (f"Python {platform.python_version()}, torch {torch.__version__}"
                     f" (MKL {mkl.group(1) if mkl else '?'}, oneDNN {onednn.group(1) if onednn else '?'}),"
                     f" {platform.system()} {platform.release()}"),
    }


def git_commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _ratio(values: list[float]) -> str:
    return f"**{statistics.median(values):.2f}×** ({min(values):.2f}–{max(values):.2f})"


def _row(label: str, reference: str, medmoe: str, ratios: list[float]) -> str:
    return f"| {label} | {reference} | {medmoe} | {_ratio(ratios)} |"


def timing_table(result: dict) -> list[str]:
    """Markdown rows of one (thread count, resolution) cell."""
    train, infer, latency, gemm = result["train"], result["infer64"], result["infer1"], result["gemm"]
    part = {i: {k: statistics.median(p[i] for p in train.parts[k]) for k in IMPLS} for i in (0, 1)}
    part_ratio = {i: [r[i] / m[i] for r, m in zip(train.parts["reference"], train.parts["medmoe"], strict=False)] for i in (0, 1)}
    lines = [
        "| measurement | reference | medmoe | speed-up: median (min–max) over rounds |", "|---|---:|---:|---:|",
        _row(f"training, batch {TRAIN_BATCH}", *(f"{TRAIN_BATCH / train.median(k):.1f} img/s" for k in IMPLS),
             train.speedups()),
        _row("↳ forward + backward", *(f"{1000 * part[0][k]:.0f} ms" for k in IMPLS), part_ratio[0]),
        _row("↳ optimizer step", *(f"{1000 * part[1][k]:.0f} ms" for k in IMPLS), part_ratio[1]),
        _row("inference, batch 64", *(f"{64 / infer.median(k):.1f} img/s" for k in IMPLS), infer.speedups()),
        _row("latency per image, batch 64", *(f"{1000 * infer.median(k) / 64:.2f} ms" for k in IMPLS),
             infer.speedups()),
        _row("latency per image, batch 1", *(f"{1000 * latency.median(k):.2f} ms" for k in IMPLS),
             latency.speedups()),
    ]
    for key, label, t, batch in (("train", "training", train, TRAIN_BATCH),
                                 ("infer", "inference, batch 64", infer, 64)):
        cells = [f"{result['flops'][key] * batch / t.median(k) / 1e9:.1f} GFLOP/s "
                 f"({100 * result['flops'][key] * batch / t.median(k) / statistics.median(gemm):.0f} %)" for k in IMPLS]
        lines.append(f"| achieved FLOP/s, {label} (% of GEMM) | {cells[0]} | {cells[1]} | |")
    lines += ["", f"fp32 GEMM {GEMM_SIZE}³ measured during this section: median {statistics.median(gemm) / 1e9:.0f} "
              f"GFLOP/s (max {max(gemm) / 1e9:.0f}). Equivalence check passed (batch 8; max |medmoe − reference| "
              "of outputs, relative norm error of the encoder/prompt/router gradients): "
              + ", ".join(f"{k} {v:.1e}" for k, v in result["equivalence"].items()) + ".", ""]
    return lines


def memory_table(memory: dict[int, dict]) -> list[str]:
    lines = ["| resolution | measurement | reference | medmoe | medmoe / reference |", "|---|---|---:|---:|---:|"]
    for resolution, cells in memory.items():
        for mode, label in MEMORY_MODES.items():
            ref, ours = cells[mode]["reference"], cells[mode]["medmoe"]
            if ref is None or ours is None:
                continue
            text = [f"{m['peak_mb']:.0f} MB (steady {m['steady_mb']:.0f})" for m in (ref, ours)]
            lines.append(f"| {resolution}×{resolution} | {label} | {text[0]} | {text[1]} | "
                         f"{ours['peak_mb'] / ref['peak_mb']:.2f} |")
    return lines


def write_report(path: Path, timings: dict[tuple[int, int], dict], memory: dict[int, dict],
                 flops: dict[int, dict[str, float]], meta: dict[str, str]) -> None:
    lines = ["# Speed: medmoe vs a plain reference implementation", "",
             f"Written by `{meta['command']}` on {meta['date']} at commit `{meta['commit']}`.", "",
             ("- **reference**: `PromptMoE(config, experts=\"loop\")` (one decoder module per expert, looped; "
             "outputs stacked and mixed with an einsum) + `torch.optim.Adam` defaults."),
             ("- **medmoe**: `create_model(config)` (`ExpertBank`, `auto` schedule: grouped kernels for single "
             "images, expert after expert for CPU batches; router weights applied as the outputs are made, so "
             "the N full-resolution outputs are never stacked; sub-pixel last layer without autograd) + "
             "`make_optimizer` (fused Adam): what `medmoe train` runs."),
             "- The same weights; outputs and gradients are checked equal before anything is timed.", "",
             "## Machine and settings", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("command", "date", "commit")]
    lines += ["", "Model FLOPs per image (convolutions and matmuls of the reference, `torch.utils.flop_counter`): "
              + "; ".join(f"{r}×{r}: training step {f['train'] / 1e9:.3f} GFLOP, inference "
                          f"{f['infer'] / 1e9:.3f} GFLOP" for r, f in flops.items()) + ".", ""]
    for (threads, resolution), result in timings.items():
        lines += [f"## {resolution}×{resolution}, {threads} torch thread{'s' if threads > 1 else ''}", ""]
        lines += timing_table(result)
    lines += ["## Peak resident memory", "", ("Each cell in a fresh process (peak RSS during two calls after a "
              "warm-up; steady = weights, optimizer state and caches between calls)."), ""]
    lines += memory_table(memory)
    lines += ["", ("Speed-ups are medians of per-round ratios (reference time / medmoe time), the two implementations "
              "timed in alternating order in every round, so a change of load affects both sides of a ratio; absolute "
              "numbers depend on the load of this shared machine (load average above)."), ""]
    atomic_write_text(path, "\n".join(lines))


# --------------------------------------------------------------------------- main


def measure(resolution: int, plan: Plan) -> dict:
    """Equivalence check, then interleaved timings, with the current thread count."""
    config = ModelConfig(resolution=resolution, text_dim=TEXT_DIM)
    torch.manual_seed(0)
    built = {impl: build(config, impl) for impl in IMPLS}
    models = {impl: m for impl, (m, _) in built.items()}
    optimizers = {impl: o for impl, (_, o) in built.items()}
    copy_reference_weights(models["reference"], models["medmoe"])
    tag = f"[{resolution}×{resolution}, {torch.get_num_threads()} thread(s)]"
    result: dict = {"equivalence": check_equivalence(models, resolution)}
    print(f"{tag} outputs and gradients match", flush=True)
    gemm = gemm_flops_per_second()
    result["train"] = time_training(models, optimizers, resolution, plan.train)
    print(f"{tag} training: {_ratio(result['train'].speedups())}", flush=True)
    gemm += gemm_flops_per_second()
    result["infer64"] = time_inference(models, resolution, 64, plan.infer)
    print(f"{tag} inference batch 64: {_ratio(result['infer64'].speedups())}", flush=True)
    result["infer1"] = time_inference(models, resolution, 1, plan.latency, plan.latency_calls)
    print(f"{tag} inference batch 1: {_ratio(result['infer1'].speedups())}", flush=True)
    result["gemm"] = gemm + gemm_flops_per_second()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64×64 only, few repeats (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed.md",
                        help="markdown file to write (default benchmarks/results/speed.md)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch CPU thread counts to time with (0: torch's default)")
    parser.add_argument("--probe-memory", nargs=3, metavar=("IMPL", "RES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    thread_counts = [n or default_threads for n in args.threads]
    if args.probe_memory:
        torch.set_num_threads(thread_counts[0])
        impl, resolution, mode = args.probe_memory
        print(json.dumps(probe_memory(impl, int(resolution), mode)))
        return 0

    load_before = os.getloadavg()
    meta = {"command": " ".join(["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit(),
            **machine_info(), "torch threads": f"{', '.join(map(str, thread_counts))} (default {default_threads})"}
    plan = PLANS["quick" if args.quick else "full"]
    meta["repeats"] = "; ".join(f"{r}×{r}: {p.train} training rounds, {p.infer} batch-64 and {p.latency} batch-1 "
                                f"inference rounds ({p.latency_calls} calls each)" for r, p in plan.items())
    timings = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for resolution, p in plan.items():
            timings[threads, resolution] = measure(resolution, p)
    torch.set_num_threads(thread_counts[0])
    config = {r: ModelConfig(resolution=r, text_dim=TEXT_DIM) for r in plan}
    flops = {r: {"train": flops_per_image(PromptMoE(c, experts="loop"), r, True),
                 "infer": flops_per_image(PromptMoE(c, experts="loop"), r, False)} for r, c in config.items()}
    for (_, resolution), result in timings.items():
        result["flops"] = flops[resolution]
    memory = {r: {mode: {impl: measure_memory(impl, r, mode, thread_counts[0]) for impl in IMPLS}
                  for mode in MEMORY_MODES} for r in plan}
    print("memory measured", flush=True)
    meta["load average (1/5/15 min)"] = (f"{' / '.join(f'{x:.1f}' for x in load_before)} before, "
                                         f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} after")
    write_report(args.out, timings, memory, flops, meta)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
