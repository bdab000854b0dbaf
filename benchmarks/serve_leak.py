#!/usr/bin/env python
"""Memory growth of ``medmoe serve`` under bursts of requests, per server environment (a leak hunt).

``python benchmarks/serve_leak.py --model RUN --image FILE [--before COMMIT] [--no-current]
[--variant LABEL[:KEY=VALUE,...]]... [--bursts 5] [--concurrency 50] [--trim] [--out FILE]``

Starts the server of this checkout (unless ``--no-current``) and, with ``--before``, of that commit in a
temporary git worktree (same virtual environment), once per ``--variant``: ``default`` is the
environment as it is, ``arena2:MALLOC_ARENA_MAX=2`` adds ``MALLOC_ARENA_MAX=2`` to the server's
environment, ``omp1:OMP_NUM_THREADS=1,MKL_NUM_THREADS=1`` adds two variables. Each server gets
``--bursts`` bursts of ``--concurrency`` simultaneous ``POST /v1/detect`` requests with ``FILE`` and
``--task``. Reported after start-up (burst 0) and after each burst: requests/s, p50/p95 latency, the
server's resident memory (``VmRSS``), its thread count, and glibc malloc's non-main arenas: how many,
how many heaps they hold and those heaps' resident size. A heap is found the way glibc's arena.c lays
it out: a ``heap_info`` (``ar_ptr, prev, size, mprotect_size``) at a 64 MiB boundary inside an
anonymous writable mapping, read from ``/proc/PID/mem``; its resident pages come from
``/proc/PID/pagemap`` (both need the server's user or root). With ``--trim``, a last row ``trim``:
after ``malloc_trim(0)`` called in the idle server through ``gdb -p`` (glibc then returns the free
pages of every arena to the kernel), so memory that was freed but kept by the allocator shows as the
drop, and live objects stay. Servers run one after another, never together.
"""

from __future__ import annotations

import argparse
import os
import platform
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402
from _serve import burst, running_server  # noqa: E402
from _versions import source_trees  # noqa: E402

HEAP_MAX = 64 * 1024 * 1024
"""glibc's HEAP_MAX_SIZE on 64-bit (2 × DEFAULT_MMAP_THRESHOLD_MAX): every heap of a non-main arena is
one such aligned reservation that starts with its ``heap_info``."""
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Memory:
    """The server's memory at one moment."""

    rss_mb: float
    threads: int
    heaps: int
    arenas: int
    heap_rss_mb: float


def _memory(pid: int) -> Memory:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()
    heaps, arenas, heap_pages = 0, set(), 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem, open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            if fields[1] != "rw-p" or len(fields) != 5:  # anonymous, writable
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for base in range(-(-start // HEAP_MAX) * HEAP_MAX, end, HEAP_MAX):
                mem.seek(base)
                ar_ptr, prev, size, protected = struct.unpack("<4Q", mem.read(32))
                first = base < ar_ptr < base + HEAP_MAX and prev == 0
                later = prev % HEAP_MAX == 0 and prev != 0
                if not (first or later) or not 0 < size <= protected <= HEAP_MAX or size % PAGE:
                    continue
                heaps += 1
                arenas.add(ar_ptr)
                pagemap.seek(base // PAGE * 8)
                entries = struct.unpack(f"<{size // PAGE}Q", pagemap.read(size // PAGE * 8))
                heap_pages += sum(entry >> 63 for entry in entries)
    return Memory(rss_mb=int(status["VmRSS"][0]) / 1024, threads=int(status["Threads"][0]), heaps=heaps,
                  arenas=len(arenas), heap_rss_mb=heap_pages * PAGE / 2**20)


def _row(burst: int | str, rate: str, p50: str, p95: str, memory: Memory) -> str:
    return (f"{burst} | {rate} | {p50} | {p95} | {memory.rss_mb:.0f} | {memory.threads} | {memory.arenas} | "
            f"{memory.heaps} | {memory.heap_rss_mb:.0f}")


def _load(src: Path, extra_env: dict[str, str], args: argparse.Namespace) -> list[str]:
    rows = []
    with running_server(src, args.model, extra_env) as (url, pid):
        rows.append(_row(0, "–", "–", "–", _memory(pid)))
        print(rows[-1], flush=True)
        for number in range(1, args.bursts + 1):
            rate, p50, p95 = burst(url, args.image, args.task, args.concurrency)
            rows.append(_row(number, f"{rate:.1f}", f"{p50:.2f}", f"{p95:.2f}", _memory(pid)))
            print(rows[-1], flush=True)
        if args.trim:
            subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
                           check=True, capture_output=True, timeout=120)
            rows.append(_row("trim", "–", "–", "–", _memory(pid)))
            print(rows[-1], flush=True)
    return rows


def _variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, assignments = text.partition(":")
    env = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        env[key] = value
    return label, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--task", default="brain_mri")
    parser.add_argument("--before", help="also (or, with --no-current, only) this commit's server")
    parser.add_argument("--no-current", action="store_true", help="skip this checkout's server")
    parser.add_argument("--variant", type=_variant, action="append",
                        help="LABEL[:KEY=VALUE,...] added to the server's environment (repeatable; default: "
                             "one variant 'default' with the environment as it is)")
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--trim", action="store_true",
                        help="after the last burst, call malloc_trim(0) in the server (gdb -p) and measure again")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.no_current and not args.before:
        parser.error("--no-current needs --before (nothing would run)")
    variants = args.variant or [("default", {})]


    sections = []
    work = Path(tempfile.mkdtemp(prefix="medmoe-leak-"))
    with source_trees(args.before, work) as versions:
        for label, src in versions.items():
            if args.no_current and label == "this checkout":
                continue
            for name, env in variants:
                title = f"{label}, {name}" + (f" ({', '.join(f'`{k}={v}`' for k, v in env.items())})" if env else "")
                print(f"### {title}", flush=True)
                rows = _load(src, env, args)
                sections.append(f"### {title}\n\n| burst | requests/s | p50 s | p95 s | server RSS MB | threads | "
                                "arenas | arena heaps | heap RSS MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
                                + "\n".join(f"| {r} |" for r in rows))
    command = " ".join(["python benchmarks/serve_leak.py", *(argv if argv is not None else sys.argv[1:])])
    text = (f"# `medmoe serve`: memory per burst\n\n`{command}` on {platform.node()} ({os.cpu_count()} CPUs); "
            f"each burst: {args.concurrency} simultaneous requests; burst 0: after start-up"
            f"{'; trim: after malloc_trim(0) in the idle server' if args.trim else ''}.\n\n"
            + "\n\n".join(sections) + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
