"""Failure classes and their mapping to the contract's error types (contracts/gpu-edit.schema.json errorTypes)."""

from __future__ import annotations


class RowCancelled(Exception):
    """The row's activity was cancelled; its denoising loop was interrupted (or it never started)."""


class GpuOutOfMemory(Exception):
    """CUDA ran out of memory even at batch size 1."""


class BatchInterrupted(Exception):
    """Raised from the step callback to stop the denoising loop of a batch whose rows are all cancelled."""


# contract error types
INVALID_REQUEST = "InvalidRequest"  # final
INPUT_ERROR = "InputError"  # final
GPU_OUT_OF_MEMORY = "GpuOutOfMemory"  # retryable
OUTPUT_STORE_FAILED = "OutputStoreFailed"  # retryable: the presigned upload of the output failed
CANCELLED = "Cancelled"
# not (yet) in the contract: the worker got SIGTERM before it started the row; retryable, runs elsewhere
WORKER_SHUTDOWN = "WorkerShutdown"


def is_oom(e: BaseException) -> bool:
    try:
        import torch

        oom_types: tuple[type, ...] = (torch.cuda.OutOfMemoryError,)
        if hasattr(torch, "OutOfMemoryError"):
            oom_types += (torch.OutOfMemoryError,)
        if isinstance(e, oom_types):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower() and "cuda" in str(e).lower()
