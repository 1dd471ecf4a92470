"""The editImageGpu activity: validate, decode (CPU thread), batch on the GPU thread, encode + write (CPU thread).

The activity is a sync ``def`` run by the worker's ThreadPoolExecutor; several run at once so the next rows are
decoded while the GPU works and the micro-batcher can group them. Heartbeats come from the denoising step
callback (on the GPU thread, handed to this activity's heartbeat thread so the GPU thread never blocks on the
SDK) and, between steps (decode, queue, VAE, encode), from the same thread on a timer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from . import contract
from .batcher import Job, WorkerShuttingDown
from .engine import Engine, RowOutput, RowWork
from .errors import (
    GPU_OUT_OF_MEMORY, INPUT_ERROR, INVALID_REQUEST, OUTPUT_STORE_FAILED, WORKER_SHUTDOWN, GpuOutOfMemory,
    RowCancelled,
)
from .images import InputImageError, OutputStoreError, load_image, shown, to_pil, write_png_atomic
from .models import InvalidParams

log = logging.getLogger("atelier_gpu.activity")

ACTIVITY_NAME = contract.activity_name()

#: A request's reference to an object of the row's staging folder whose URL the worker asks for when it uses it.
STAGED = "staged:"



def _attempt() -> int:
    """This activity's attempt number (1 outside an activity, as in direct engine tests)."""
    try:
        return int(activity.info().attempt)
    except RuntimeError:
        return 1

class Heartbeater:
    """Sends this activity's heartbeats from a helper thread (activity context copied into it).

    ``update(**details)`` may be called from any thread (the GPU thread's step callback does); it wakes the
    helper, which heartbeats at once. Without updates it heartbeats every ``interval_s`` with the last details.
    """

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._details: dict[str, Any] = {"stage": "start"}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._loop,), name="atelier-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeater":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def update(self, **details: Any) -> None:
        with self._lock:
            self._details = details
        self._wake.set()

    def _beat(self) -> dict[str, Any]:
        with self._lock:
            details = dict(self._details)
        try:
            activity.heartbeat(details)
        except Exception:  # noqa: BLE001
            log.debug("heartbeat failed", exc_info=True)
        return details

    def _loop(self) -> None:
        last: dict[str, Any] | None = None
        while not self._stop.is_set():
            last = self._beat()
            self._wake.wait(self.interval_s)
            self._wake.clear()
        # A stage reported just before the activity ended (a fast encode) is sent too, not lost to
        # the stop that raced it.
        with self._lock:
            pending = self._details != last
        if pending:
            self._beat()


def _app_error(message: str, type_: str, retryable: bool) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=not retryable)


def _final_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e


class UrlGrants:
    """Asks the row workflow for the URLs of a request's ``staged:`` references, when the attempt uses them.

    The request in the history names no URL: the workflow's update (the contract's urlsUpdateName) mints
    URLs valid for minutes, only for the attempt the server runs now, and a create URL names an object of
    that attempt alone. Activities run in threads; the update is sent on the worker's event loop.
    """

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop, timeout_s: float = 120.0):
        self.client = client
        self.loop = loop
        self.timeout_s = timeout_s

    def urls(self, refs: list[str], create: bool) -> list[str]:
        info = activity.info()
        request = {"activity_id": info.activity_id, "attempt": int(info.attempt),
                   "names": [r[len(STAGED):] for r in refs], "create": create}
        contract.validate_urls_request(request)
        handle = self.client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        # One id per attempt and use: a resent update is answered once.
        update_id = f"gpu-urls-{info.activity_id}-{info.attempt}-{'put' if create else 'get'}"
        future = asyncio.run_coroutine_threadsafe(
            handle.execute_update(contract.urls_update_name(), request, id=update_id), self.loop)
        try:
            answer = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()
            raise _app_error(f"the row workflow did not answer for URLs in {self.timeout_s:.0f} s",
                             OUTPUT_STORE_FAILED, retryable=True) from None
        except Exception as e:  # noqa: BLE001
            cause = _final_cause(e)
            final = isinstance(cause, ApplicationError) and cause.non_retryable
            kind = INVALID_REQUEST if final else OUTPUT_STORE_FAILED
            raise _app_error(f"no URLs for {', '.join(refs)}: {cause}", kind, retryable=not final) from None
        urls = list(answer["urls"])
        if len(urls) != len(refs):
            raise _app_error(f"the row workflow answered {len(urls)} URLs for {len(refs)} names", INVALID_REQUEST,
                             retryable=False)
        return urls


class EditService:
    """Holds the loaded engine; ``edit_image_gpu`` is the activity (an instance method, so state is shared)."""

    def __init__(self, engine: Engine, model: str, *, worker_id: str | None = None,
                 heartbeat_interval_s: float | None = None, poll_s: float = 0.05, png_compress_level: int = 4):
        self.engine = engine
        self.adapter = engine.adapter
        self.model = model
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat_interval_s = heartbeat_interval_s
        self.poll_s = poll_s
        self.png_compress_level = png_compress_level
        self.grants: UrlGrants | None = None

    def serve_url_grants(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Lets requests name ``staged:`` objects: their URLs are asked of the row workflow through ``client``."""
        self.grants = UrlGrants(client, loop)

    def _resolve(self, refs: list[str], create: bool) -> list[str]:
        """``refs`` with each ``staged:`` reference replaced by a URL minted for this attempt."""
        staged = [r for r in refs if r.startswith(STAGED)]
        if not staged:
            return refs
        if self.grants is None:
            raise _app_error("the request names staged objects, and this worker has no Temporal client to ask for "
                             "their URLs", INVALID_REQUEST, retryable=False)
        urls = iter(self.grants.urls(staged, create))
        return [next(urls) if r.startswith(STAGED) else r for r in refs]

    def _interval(self) -> float:
        if self.heartbeat_interval_s is not None:
            return self.heartbeat_interval_s
        try:
            hb = activity.info().heartbeat_timeout
        except RuntimeError:
            hb = None
        if hb:
            return max(0.2, min(10.0, hb.total_seconds() / 4))
        return 5.0

    def _check(self, request: Any) -> Any:
        try:
            contract.validate_request(request)
        except contract.ContractError as e:
            raise _app_error(str(e), INVALID_REQUEST, retryable=False) from None
        if request["model_type"] != self.adapter.model_type:
            raise _app_error(
                f"this worker serves model type {self.adapter.model_type}, request has {request['model_type']}",
                INVALID_REQUEST, retryable=False)
        if contract.task_queue_for(request["model"]) != contract.task_queue_for(self.model):
            raise _app_error(f"this worker serves model {self.model!r}, request has {request['model']!r}",
                             INVALID_REQUEST, retryable=False)
        try:
            settings = self.adapter.resolve(dict(request["params"]))
            self.adapter.check_images(len(request["input_images"]))
        except InvalidParams as e:
            raise _app_error(str(e), INVALID_REQUEST, retryable=False) from None
        return settings

    @activity.defn(name=ACTIVITY_NAME, no_thread_cancel_exception=True)
    def edit_image_gpu(self, request: Any) -> dict[str, Any]:
        t0 = time.monotonic()
        settings = self._check(request)
        batcher = self.engine.batcher
        with Heartbeater(self._interval()) as hb:
            # 1. decode + resize on this (CPU) thread while the GPU thread runs other rows
            hb.update(stage="decode")
            batcher.announce()
            try:
                inputs = self._resolve(list(request["input_images"]), create=False)
                images = [load_image(p) for p in inputs]
                row = self.adapter.prepare(request["prompt"], images, int(request["seed"]), settings)
            except InputImageError as e:
                batcher.withdraw()
                raise _app_error(str(e), INPUT_ERROR, retryable=False) from None
            except InvalidParams as e:
                batcher.withdraw()
                raise _app_error(str(e), INVALID_REQUEST, retryable=False) from None
            except BaseException:
                batcher.withdraw()
                raise

            # 2. queue for the GPU thread; heartbeat from its step callback
            def on_step(step: int, total: int) -> None:
                hb.update(stage="denoise", step=step, steps=total)

            job = Job(key=row.batch_key(self.adapter), payload=RowWork(row=row, on_step=on_step))
            hb.update(stage="queued")
            future = batcher.submit(job)
            out = self._wait(job, future)

            # 3. encode + write on this thread
            hb.update(stage="encode")
            image = to_pil(out.image)
            # A staged output's create-only URL is asked for now, once the image exists: valid for minutes.
            output_path = self._resolve([request["output_path"]], create=True)[0]
            try:
                written = write_png_atomic(image, output_path, self.png_compress_level)
            except OutputStoreError as e:
                # The store failed or refused the upload: retried (a new attempt gets the same URL).
                raise _app_error(str(e), OUTPUT_STORE_FAILED, retryable=True) from None
        result = {
            # Without a presigned URL's signature: results are kept in history.
            "output_path": shown(output_path),
            "width": image.width,
            "height": image.height,
            "seed": int(request["seed"]),
            "num_inference_steps": settings.num_inference_steps,
            "latency_ms": round((time.monotonic() - t0) * 1000.0, 3),
            "batch_size": out.batch_size,
            "worker": self.worker_id,
            "attempt": _attempt(),
            # What this worker made: the commit accepts the stored object only if it is these bytes.
            "sha256": written.sha256,
            "size": written.size,
        }
        contract.validate_result(result)
        return result

    def _wait(self, job: Job, future) -> RowOutput:
        while True:
            try:
                return future.result(timeout=self.poll_s)
            except FutureTimeout:
                if activity.is_cancelled():
                    job.cancelled.set()  # the GPU thread interrupts the loop once every row of the batch is
                    self.engine.batcher.notify()
                    raise CancelledError("Cancelled: the activity was cancelled") from None
            except RowCancelled as e:
                raise CancelledError(f"Cancelled: {e}") from None
            except GpuOutOfMemory as e:
                raise _app_error(str(e), GPU_OUT_OF_MEMORY, retryable=True) from None
            except WorkerShuttingDown as e:
                raise _app_error(str(e), WORKER_SHUTDOWN, retryable=True) from None
            except (InvalidParams, ValueError) as e:
                raise _app_error(f"the pipeline rejected the request: {e}", INVALID_REQUEST, retryable=False) from e
