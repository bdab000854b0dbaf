#!/usr/bin/env python
"""What the feature models cost on this machine: trunk extraction, training, inference, memory.

``python benchmarks/feature_speed.py RUN [RUN ...] [--threads 2] [--rounds 5]`` measures, for each run
folder (e.g. ``feature_moe`` and ``patchcore`` runs of ``benchmarks/run.py --profile cpu-feat``):

- trunk extraction, images/s at the run's resolution (batch 64, torch eager);
- the run's training time (``model.json`` ``info.train_seconds``: the epochs) and, for a benchmark run,
  its whole wall time (``done.json``: trunk features, memories, training, thresholds, evaluation);
- scoring throughput in images/s at batch 64 and batch-1 latency (median of ``--rounds`` timed rounds
  after one warm-up) for the torch model and, exported with ``medmoe export``, for onnxruntime — the
  model alone on preprocessed tensors, so file decoding and overlays are excluded;
- peak resident memory of this process.

Writes ``benchmarks/results/cpu-feat/speed.md`` (or ``--out``) with the machine and settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _median_seconds(fn, rounds: int) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--note", default="", help="conditions to state in the output (e.g. other load)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu-feat" / "speed.md")
    args = parser.parse_args(argv)

    import torch

    from medmoe.api.export import export_onnx
    from medmoe.api.onnx_backend import OnnxBackend
    from medmoe.atomic import atomic_write_text
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.report.tables import markdown_table

    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        checkpoint = load_checkpoint(run)
        model, config = checkpoint.model, checkpoint.config
        r = config.model.resolution
        images = torch.rand(64, 1, r, r)
        text = None if checkpoint.prompt_embeddings is None else checkpoint.prompt_embeddings[torch.zeros(64, dtype=torch.long)]
        with torch.no_grad():
            trunk = _median_seconds(lambda: model.prepare(images), args.rounds)
            batch = _median_seconds(lambda: model(images, text), args.rounds)
            single = _median_seconds(lambda: model(images[:1], None if text is None else text[:1]), args.rounds * 4)
        with tempfile.TemporaryDirectory() as tmp:
            exported = export_onnx(run, Path(tmp) / "model.onnx").onnx_path
            backend = OnnxBackend(exported)
            np_images, np_text = images.numpy(), None if text is None else text.numpy()
            onnx_batch = _median_seconds(lambda: backend.run(np_images, np_text), args.rounds)
            onnx_single = _median_seconds(lambda: backend.run(np_images[:1], None if np_text is None else np_text[:1]),
                                          args.rounds * 4)
        info = checkpoint.info
        epochs = info.get("epochs") if info.get("best_epoch") else 0
        done = run / "done.json"  # a benchmark run: its wall time, memory fit and evaluation included
        wall = json.loads(done.read_text()).get("seconds_this_session") if done.is_file() else None
        rows.append({
            "run": f"{config.model.architecture} (`{run}`)",
            "trunk": f"{64 / trunk:.0f}",
            "train": (f"{info.get('train_seconds', float('nan')):.0f} s / {epochs} epochs" if epochs else "memory fit")
                     + (f"; run {wall:.0f} s" if wall else ""),
            "torch64": f"{64 / batch:.0f}", "torch1": f"{1000 * single:.1f}",
            "onnx64": f"{64 / onnx_batch:.0f}", "onnx1": f"{1000 * onnx_single:.1f}",
        })
        print(json.dumps(rows[-1]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = markdown_table(rows, [("run", "run", ""), ("trunk", "trunk img/s (b64)", ""), ("train", "training", ""),
                                  ("torch64", "torch img/s (b64)", ""), ("torch1", "torch ms (b1)", ""),
                                  ("onnx64", "onnx img/s (b64)", ""), ("onnx1", "onnx ms (b1)", "")])
    cpu = platform.processor() or platform.machine()
    names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
             if ln.startswith("model name")] if Path("/proc/cpuinfo").is_file() else []
    text = (f"# Feature models: cost on this machine\n\nWritten {datetime.now(UTC).isoformat(timespec='seconds')} by "
            f"`python benchmarks/feature_speed.py {' '.join(map(str, args.runs))} --threads {args.threads}` on "
            f"{names[0] if names else cpu}, {args.threads} torch thread(s), torch {torch.__version__}. Medians of "
            f"{args.rounds} rounds (batch 1: {args.rounds * 4}) after a warm-up; the model alone on preprocessed "
            f"tensors (no decoding, no overlays). Peak resident memory of the process: {peak:.0f} MiB. "
            "Training time is the run's own (`model.json`), on whatever else the machine was doing then."
            f"{' ' + args.note if args.note else ''}\n\n"
            f"{table}\n")
    print(text)
    atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
