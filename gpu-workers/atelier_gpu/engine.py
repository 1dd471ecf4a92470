"""The GPU side: one pipeline, one GPU thread (via the micro-batcher), OOM fallback, step callbacks.

Everything that touches the pipeline runs on the batcher's single GPU thread. Activity threads only decode,
resize, encode and write (see activity.py).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .batcher import Job, MicroBatcher
from .errors import BatchInterrupted, GpuOutOfMemory, RowCancelled, is_oom
from .models import ModelAdapter, PreparedRow

log = logging.getLogger("atelier_gpu.engine")


@dataclass
class RowWork:
    row: PreparedRow
    # called on the GPU thread after every denoising step with (step, total); e.g. heartbeats the activity
    on_step: Callable[[int, int], None] | None = None


@dataclass
class RowOutput:
    image: np.ndarray  # HWC float32 in [0, 1]
    batch_size: int
    gpu_ms: float


@dataclass
class EngineStats:
    batches: int = 0
    rows: int = 0
    oom_splits: int = 0
    row_retries: int = 0  # rows run again alone after their batch failed
    busy_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class Engine:
    """Runs batches of prepared rows through one pipeline."""

    def __init__(self, pipe: Any, adapter: ModelAdapter, max_batch: int = 1, max_wait_s: float = 0.05):
        self.pipe = pipe
        self.adapter = adapter
        adapter.configure_for(pipe)
        self.max_batch = max_batch if adapter.batchable else 1
        self.stats = EngineStats()
        self.warmed_sizes: list[tuple[int, int]] = []  # (width, height) of each warm-up output, in order
        self._lock = threading.Lock()
        params = inspect.signature(pipe.__call__).parameters
        self._has_callback = adapter.has_step_callback and "callback_on_step_end" in params
        self._takes_output_type = "output_type" in params
        self.batcher = MicroBatcher(self.run_batch, max_batch=self.max_batch, max_wait_s=max_wait_s)

    def start(self) -> "Engine":
        self.batcher.start()
        return self

    # --- called on the GPU thread ---------------------------------------------------------------------------
    def run_batch(self, jobs: list[Job]) -> None:
        live = []
        for job in jobs:
            if job.cancelled.is_set():
                job.future.set_exception(RowCancelled("cancelled before it started"))
            else:
                live.append(job)
        if live:
            self._run(live)

    def _run(self, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            images = self.generate([j.payload.row for j in jobs], jobs=jobs)
        except BatchInterrupted:
            for j in jobs:
                j.future.set_exception(RowCancelled("cancelled; denoising loop interrupted"))
            return
        except Exception as e:  # noqa: BLE001 - every future must be resolved
            if is_oom(e):
                self._free_memory()
                if len(jobs) == 1:
                    err = GpuOutOfMemory(f"CUDA out of memory at batch size 1: {str(e).splitlines()[0][:300]}")
                    jobs[0].future.set_exception(err)
                    return
                half = len(jobs) // 2
                self.stats.oom_splits += 1
                # later batches are capped below the size that failed
                self.batcher.max_batch = max(1, min(self.batcher.max_batch, half))
                log.warning("CUDA OOM at batch size %d; retrying as %d + %d (max batch now %d)",
                            len(jobs), half, len(jobs) - half, self.batcher.max_batch)
                self._run(jobs[:half])
                self._run(jobs[half:])
                return
            if len(jobs) > 1:
                # Rows that shared a call may share nothing else: one row's bad input, or a batch-only failure
                # (padded prompts under a mask-less attention kernel), must not fail the others. Each runs alone
                # and fails, if at all, on its own.
                self.stats.row_retries += len(jobs)
                log.warning("batch of %d failed (%s: %s); running its rows one at a time", len(jobs),
                            type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                for j in jobs:
                    if j.cancelled.is_set():
                        j.future.set_exception(RowCancelled("cancelled before it was run again alone"))
                    else:
                        self._run([j])
                return
            jobs[0].future.set_exception(e)
            return
        ms = (time.perf_counter() - t0) * 1000.0
        if len(images) != len(jobs):
            # A short answer must fail its rows, not leave some of them waiting forever.
            err = RuntimeError(f"the pipeline returned {len(images)} images for a batch of {len(jobs)}")
            for j in jobs:
                j.future.set_exception(err)
            return
        for j, im in zip(jobs, images, strict=True):
            j.future.set_result(RowOutput(image=im, batch_size=len(jobs), gpu_ms=ms))

    def _free_memory(self) -> None:
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def generate(self, rows: list[PreparedRow], jobs: list[Job] | None = None) -> list[np.ndarray]:
        """One pipeline call for `rows` (equal batch keys). Returns HWC float arrays in [0, 1]."""
        import torch

        kw = self.adapter.call_kwargs(rows)
        gens = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in rows]
        kw["generator"] = gens[0] if len(gens) == 1 else gens
        if self._takes_output_type:
            kw["output_type"] = "np"
        total = rows[0].settings.num_inference_steps
        remove_hook = None
        if jobs is not None:
            if self._has_callback:
                kw["callback_on_step_end"] = self._step_callback(jobs, total)
                kw["callback_on_step_end_tensor_inputs"] = []
            else:
                remove_hook = self._install_step_hook(jobs, total)
        t0 = time.perf_counter()
        try:
            out = self.pipe(**kw)
        finally:
            if remove_hook is not None:
                remove_hook()
            dt = time.perf_counter() - t0
            with self._lock:
                self.stats.busy_s += dt
                self.stats.batches += 1
                self.stats.rows += len(rows)
                self.stats.batch_sizes.append(len(rows))
        images = self.adapter.output_images(out)
        if isinstance(images, np.ndarray):
            return [images[i] for i in range(images.shape[0])]
        return [np.asarray(im, dtype=np.float32) / 255.0 for im in images]

    def _on_step(self, jobs: list[Job], step: int, total: int) -> None:
        for j in jobs:
            cb = j.payload.on_step
            if cb is not None:
                try:
                    cb(step, total)
                except Exception:  # noqa: BLE001 - a heartbeat problem must not kill the batch
                    log.debug("on_step failed", exc_info=True)
        if all(j.cancelled.is_set() for j in jobs):
            self.pipe._interrupt = True  # the denoising loop checks self.interrupt; raising stops it at once
            raise BatchInterrupted()

    def _step_callback(self, jobs: list[Job], total: int):
        def callback(pipe, i, t, callback_kwargs):
            self._on_step(jobs, i + 1, total)
            return {}

        return callback

    def _install_step_hook(self, jobs: list[Job], total: int) -> Callable[[], None] | None:
        """For pipelines without callback_on_step_end (LongCat): heartbeat / check cancellation after each
        scheduler step. Not on the denoiser's forward: with CFG the pipeline calls it twice per step, so the
        count would reach 2 x steps. Returns the function that removes the hook."""
        scheduler = getattr(self.pipe, "scheduler", None)
        if scheduler is None or not callable(getattr(scheduler, "step", None)):
            return None
        original_step = scheduler.step
        calls = {"n": 0}

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original_step(*args, **kwargs)
            calls["n"] += 1
            self._on_step(jobs, calls["n"], total)
            return out

        scheduler.step = step

        def remove() -> None:
            # the instance attribute shadowed the class's method; deleting it restores the method
            del scheduler.step

        return remove

    # --- warm-up --------------------------------------------------------------------------------------------
    def warmup(self, steps: int = 2, batch_sizes: tuple[int, ...] = (1,),
               sizes: list[tuple[int, int]] | None = None) -> float:
        """Run the pipeline once per output size and batch size, so kernels and compiled graphs are ready before
        the first row (with --compile, a size first seen by a row would recompile on the GPU thread while that row
        and the rows queued behind it wait). sizes: (width, height) outputs; None: the --max-area square.
        Returns seconds."""
        t0 = time.perf_counter()
        self.warmed_sizes = []
        for size in sizes or [None]:
            params: dict[str, Any] = {"num_inference_steps": max(1, steps)}
            if size is not None and {"height", "width"} <= self.adapter.supports:
                params["width"], params["height"] = size
            settings = self.adapter.resolve(params)
            img = self.adapter.warmup_image(size)
            for n in batch_sizes:
                n = min(n, self.max_batch)
                rows = [self.adapter.prepare("warm-up", [img], i, settings) for i in range(n)]
                out = self.generate(rows)
                self.warmed_sizes.append((out[0].shape[1], out[0].shape[0]))
        self.stats = EngineStats()
        return time.perf_counter() - t0
