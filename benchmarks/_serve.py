"""``medmoe serve`` of one source tree on 127.0.0.1, and bursts of simultaneous requests against it."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running_server(src: Path, model: Path, env: dict[str, str] | None = None,
                   args: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """Start ``medmoe serve --model MODEL [ARGS]`` from the sources in ``src`` (first on ``PYTHONPATH``, with
    ``env`` added) on a free port; yield its URL and process id once ``/healthz`` answers; stop it on exit."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen([sys.executable, "-c", "from medmoe.cli import main; main()", "serve", "--model",
                               str(model), "--port", str(port), *args], env={**os.environ, "PYTHONPATH": str(src), **(env or {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError(f"the server of {src} exited with code {server.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def burst(url: str, image: Path, task: str, concurrency: int) -> tuple[float, float, float]:
    """Send ``concurrency`` simultaneous ``POST /v1/detect`` of ``image`` with ``task``; returns requests/s,
    and the median and 95th-percentile latency in seconds."""
    import httpx

    content = image.read_bytes()

    def one(_: int) -> float:
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/detect", files={"file": (image.name, content)}, data={"task": task},
                              timeout=600)
        response.raise_for_status()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = sorted(pool.map(one, range(concurrency)))
    wall = time.perf_counter() - started
    return concurrency / wall, statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.95 * concurrency))]
