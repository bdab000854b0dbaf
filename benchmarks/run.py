#!/usr/bin/env python
"""Reproduce the paper's Tables 1–3 with our baselines: ``python benchmarks/run.py --profile cpu-64``.

Every method × seed (× task for single-task baselines) is trained and evaluated; finished runs are
kept under ``benchmarks/results/<profile>/runs/`` and skipped when the command is run again, so it
can run in parts. After every run ``results.json``, ``table1.md``, ``table2.md``, ``table3.md`` and
``figures/`` are rewritten. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {threads or os.cpu_count()} torch thread(s)"
    return f"{cpu} ({os.cpu_count()} cores), {device}, {platform.system()} {platform.release()}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu-64", help="cpu-64 (default), cpu-feat, paper-256, quick or quick-feat")
    parser.add_argument("--quick", action="store_true", help="same as --profile quick: a smoke run of every table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of Table 1; the first also serves Tables 2 and 3 (default 0 1 2)")
    parser.add_argument("--data", nargs="+", default=[], help="data root or manifests (default: $MEDMOE_DATA)")
    parser.add_argument("--methods", nargs="+", help="run only these methods (default: all)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<profile>)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field for every run, e.g. --set train.epochs=2 (repeatable; "
                             "part of the runs' settings, so keep it when resuming)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite results.json, tables and figures")
    parser.add_argument("--progress", action="store_true", help="show per-run progress bars")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import torch

    from medmoe.benchmark import PROFILES, BenchmarkContext, run_benchmark, write_outputs
    from medmoe.benchmark.plan import select_methods
    from medmoe.benchmark.runner import ManifestSource
    from medmoe.engine.config import PROFILE_DIR
    from medmoe.errors import MedmoeError

    profile_name = "quick" if args.quick else args.profile
    if profile_name not in PROFILES:
        parser.error(f"unknown profile {profile_name!r}; choose from {', '.join(PROFILES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    canonical = ["python", "benchmarks/run.py", "--profile", profile_name, "--seeds", *map(str, args.seeds),
                 "--data", *(args.data or ["$MEDMOE_DATA"]), *(["--methods", *args.methods] if args.methods else []),
                 *(item for o in args.overrides for item in ("--set", o))]
    provenance = {
        "command": shlex.join(canonical),
        "invocation": shlex.join(["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": _git("describe", "--always", "--dirty"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(args.threads),
    }
    context = BenchmarkContext(
        profile=PROFILES[profile_name], config_dir=PROFILE_DIR, data=tuple(args.data),
        out=args.out or REPO / "benchmarks" / "results" / profile_name,
        extra_overrides=tuple(args.overrides), progress=args.progress,
        provenance={k: provenance[k] for k in ("commit", "machine")},
    )
    try:
        methods = select_methods(args.methods, context.profile.tables)
        if args.report_only:
            tasks = ManifestSource(context).task_ids(args.seeds[0])
            results = write_outputs(context, methods, args.seeds, tasks, provenance)
        else:
            results = run_benchmark(context, methods, args.seeds, provenance)
    except MedmoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = results["progress"]
    print(f"{progress['runs_done']} of {progress['runs_expected']} runs finished; results in {context.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
