#!/usr/bin/env python
"""Load test of ``medmoe serve`` on 127.0.0.1: throughput, latency and resident memory per burst.

``python benchmarks/serve_load.py --model RUN --image FILE [--before COMMIT] [--bursts 5] [--concurrency 50]
[--out benchmarks/results/serve-load.md]`` starts the server (this checkout, and with ``--before`` the
given commit in a temporary git worktree, same virtual environment), sends ``--bursts`` bursts of
``--concurrency`` simultaneous ``POST /v1/detect`` requests with ``FILE`` and a task, and reports per
burst: requests/s, p50/p95 latency and the server's resident memory (``VmRSS``) after it. Use a run
both versions load (one without trust outputs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402
from _serve import burst, running_server  # noqa: E402
from _versions import source_trees  # noqa: E402


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load(src: Path, args: argparse.Namespace) -> list[str]:
    rows = []
    with running_server(src, args.model) as (url, pid):
        for number in range(1, args.bursts + 1):
            rate, p50, p95 = burst(url, args.image, args.task, args.concurrency)
            rows.append(f"{number} | {rate:.1f} | {p50:.2f} | {p95:.2f} | {_rss_mb(pid):.0f}")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--task", default="brain_mri")
    parser.add_argument("--before")
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)


    sections = []
    work = Path(tempfile.mkdtemp(prefix="medmoe-load-"))
    with source_trees(args.before, work) as versions:
        for label, src in versions.items():
            rows = _load(src, args)
            sections.append(f"### {label}\n\n| burst | requests/s | p50 s | p95 s | server RSS MB |\n"
                            "|---:|---:|---:|---:|---:|\n" + "\n".join(f"| {r} |" for r in rows))
    text = (f"# `medmoe serve` under load\n\n`python benchmarks/serve_load.py --model {args.model} --image "
            f"{args.image.name} --before {args.before} --bursts {args.bursts} --concurrency {args.concurrency}` on "
            f"{platform.node()} ({os.cpu_count()} CPUs); each burst: {args.concurrency} simultaneous requests.\n\n"
            + "\n\n".join(sections) + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
