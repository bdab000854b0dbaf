"""Score concurrent requests together: a queue in front of the model and one thread that runs it.

Each request is read and preprocessed in its own worker thread (:meth:`Detector.prepare`), then put
on a queue; a single scoring thread takes what is waiting — up to :data:`MAX_BATCH` images, waiting
at most :data:`MAX_WAIT_S` for more after the first — and scores it in one forward pass
(:meth:`Detector.run`). Concurrent requests then share forward passes instead of queueing behind a
lock, and torch only ever runs on that one thread: every thread that calls into torch grows its own
allocator arenas and thread pool, which is how a server answering from FastAPI's 40-thread pool
kept growing its resident memory.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from medmoe.api.detector import Detector, PreparedImage
from medmoe.api.results import DetectionResult

MAX_BATCH = 16
"""Most images in one forward pass."""
MAX_WAIT_S = 0.005
"""How long the scoring thread waits for more requests once one is waiting."""


class Batcher:
    """The scoring thread and its queue (module docstring).

    Args:
        detector: the model; only this object's thread runs it.
        max_batch: most images per forward pass.
        max_wait_s: the wait for more requests after the first.
    """

    def __init__(self, detector: Detector, *, max_batch: int = MAX_BATCH, max_wait_s: float = MAX_WAIT_S) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, not {max_batch}")
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.images = 0
        self._queue: queue.Queue[tuple[PreparedImage, Future[DetectionResult]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="medmoe-scoring", daemon=True)
        self._thread.start()

    def score(self, prepared: PreparedImage) -> DetectionResult:
        """Score one prepared image with whatever else is waiting; blocks until its result is ready."""
        future: Future[DetectionResult] = Future()
        self._queue.put((prepared, future))
        return future.result()

    def close(self) -> None:
        """Stop the scoring thread after what is queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=self.max_wait_s)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                results = self.detector.run([p for p, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the failure
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
