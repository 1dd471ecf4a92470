"""Micro-batcher: one GPU thread; activity threads submit prepared rows and wait on futures.

Rows whose keys are equal (same model type, settings and image sizes; see PreparedRow.batch_key) are grouped
into one pipeline call of at most `max_batch` rows. The GPU thread takes the oldest queued row, then gathers
compatible rows already queued; while it has fewer than max_batch and some other rows are still being
prepared (announced but not submitted yet), it waits for them up to `max_wait_s` after the first row arrived.
It never waits when nothing else is coming, so a lone row starts at once. Rows with key None run alone.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

log = logging.getLogger("atelier_gpu.batcher")


class WorkerShuttingDown(Exception):
    """The worker is shutting down and did not start this row; it should run elsewhere (retryable)."""


@dataclass
class Job:
    key: Hashable | None  # None: never batched
    payload: Any
    future: Future = field(default_factory=Future)
    # set by the owner (activity thread) when the activity was cancelled; the GPU thread skips such rows and
    # interrupts a batch whose rows are all cancelled
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = 0.0


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Job]], None], max_batch: int = 1, max_wait_s: float = 0.05,
                 name: str = "gpu"):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._preparing = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"atelier-{name}", daemon=True)
        self.busy = threading.Event()  # set while a batch runs
        self.batches_run = 0
        self.rows_run = 0

    # --- producer side (activity threads) -------------------------------------------------------------------
    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    def announce(self) -> None:
        """A row started preparing (decode/resize) and will be submitted or withdrawn."""
        with self._cond:
            self._preparing += 1

    def withdraw(self) -> None:
        """An announced row failed before submission."""
        with self._cond:
            self._preparing = max(0, self._preparing - 1)
            self._cond.notify_all()

    def submit(self, job: Job, announced: bool = True) -> Future:
        with self._cond:
            if announced:
                self._preparing = max(0, self._preparing - 1)
            if self._stopping:
                job.future.set_exception(WorkerShuttingDown("worker is shutting down; row not started"))
                self._cond.notify_all()
                return job.future
            job.submitted_at = time.monotonic()
            self._queue.append(job)
            self._cond.notify_all()
        return job.future

    def notify(self) -> None:
        """Wake the GPU thread (e.g. a queued row was cancelled)."""
        with self._cond:
            self._cond.notify_all()

    # --- lifecycle ------------------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop: the batch in progress finishes; queued and later rows fail with WorkerShuttingDown."""
        with self._cond:
            self._stopping = True
            rejected = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in rejected:
            if not job.future.done():
                job.future.set_exception(WorkerShuttingDown("worker is shutting down; row not started"))
        if wait and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # --- GPU thread -----------------------------------------------------------------------------------------
    def _take_compatible(self, batch: list[Job]) -> None:
        key = batch[0].key
        keep: collections.deque[Job] = collections.deque()
        while self._queue:
            job = self._queue.popleft()
            if len(batch) < self.max_batch and job.key == key and not job.cancelled.is_set():
                batch.append(job)
            else:
                keep.append(job)
        self._queue.extend(keep)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                first = self._queue.popleft()
                if first.cancelled.is_set():
                    self._finish_cancelled([first])
                    continue
                batch = [first]
                if first.key is None or self.max_batch == 1:
                    return batch
                deadline = first.submitted_at + self.max_wait_s
                while True:
                    self._take_compatible(batch)
                    if len(batch) >= self.max_batch or self._preparing == 0 or self._stopping:
                        return batch
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return batch
                    self._cond.wait(left)

    @staticmethod
    def _finish_cancelled(jobs: list[Job]) -> None:
        from .errors import RowCancelled

        for job in jobs:
            if not job.future.done():
                job.future.set_exception(RowCancelled("cancelled before it started"))

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self.busy.set()
            try:
                self._run_batch(batch)
            except BaseException as e:  # run_batch should set every future; never leave one hanging
                log.exception("batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
            finally:
                self.busy.clear()
                self.batches_run += 1
                self.rows_run += len(batch)
