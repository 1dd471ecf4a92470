"""Cancellation interrupts the denoising loop; CUDA OOM retries smaller batches, then fails retryable."""

from __future__ import annotations

import functools
import threading
import time

import pytest
import torch
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from conftest import load_tiny, request


def test_cancel_interrupts_denoising_loop(make_service, tiny_models, images, tmp_path):
    svc = make_service("instruct-pix2pix")
    steps_total = 400  # far longer than the test waits
    env = ActivityEnvironment()
    seen: list[int] = []
    cancelled_at: dict = {}

    def on_heartbeat(*details):
        d = details[0] if details else {}
        if d.get("stage") == "denoise":
            seen.append(d["step"])
            if d["step"] >= 3 and not cancelled_at:
                cancelled_at["t"] = time.monotonic()
                cancelled_at["step"] = d["step"]
                threading.Thread(target=env.cancel).start()

    env.on_heartbeat = on_heartbeat
    out = tmp_path / "o.png"
    t0 = time.monotonic()
    with pytest.raises(CancelledError):
        env.run(svc.edit_image_gpu, request(tiny_models["instruct-pix2pix"], "instruct-pix2pix", [images["red"]],
                                            str(out), params={"num_inference_steps": steps_total}))
    assert cancelled_at, "no denoise heartbeat seen"
    # the GPU thread stops at the next step callback, long before the loop would end
    deadline = time.monotonic() + 10
    while svc.engine.batcher.busy.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not svc.engine.batcher.busy.is_set()
    assert svc.engine.pipe._interrupt is True
    assert max(seen) < steps_total / 2, f"loop ran {max(seen)} of {steps_total} steps"
    assert not out.exists()
    assert time.monotonic() - t0 < 60
    # the engine keeps serving afterwards
    res = ActivityEnvironment().run(svc.edit_image_gpu, request(
        tiny_models["instruct-pix2pix"], "instruct-pix2pix", [images["red"]], str(out),
        params={"num_inference_steps": 2}))
    assert out.exists() and res["batch_size"] == 1


def _oom_pipe(real, fail_above: int):
    """The same pipeline object with a __call__ that raises CUDA OOM for batches larger than fail_above."""
    base = type(real)
    calls: list[int] = []

    class OomInjecting(base):  # type: ignore[misc, valid-type]
        @functools.wraps(base.__call__)
        def __call__(self, *args, **kwargs):
            prompt = kwargs.get("prompt")
            n = len(prompt) if isinstance(prompt, list) else 1
            calls.append(n)
            if n > fail_above:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} GiB (injected)")
            return base.__call__(self, *args, **kwargs)

    real.__class__ = OomInjecting
    return real, calls, base


def test_oom_splits_batch_down_to_one(make_service, tiny_models, images, tmp_path, decode_barrier):
    decode_barrier(4)
    pipe = load_tiny(tiny_models, "instruct-pix2pix")
    pipe, calls, base = _oom_pipe(pipe, fail_above=1)
    try:
        svc = make_service("instruct-pix2pix", batch_size=4, max_wait_s=2.0, pipe=pipe)
        results, errors = {}, []

        def worker(i, name):
            try:
                results[i] = ActivityEnvironment().run(svc.edit_image_gpu, request(
                    tiny_models["instruct-pix2pix"], "instruct-pix2pix", [images[name]], str(tmp_path / f"{i}.png"),
                    seed=i))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i, n)) for i, n in
                   enumerate(["red", "green", "blue", "red"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert sorted(r["batch_size"] for r in results.values()) == [1, 1, 1, 1]
        assert calls[0] == 4 and calls.count(2) == 2 and calls.count(1) == 4  # 4 -> 2+2 -> 1+1+1+1
        assert svc.engine.stats.oom_splits == 3
        assert svc.engine.batcher.max_batch == 1  # later batches stay below the size that failed
        assert all((tmp_path / f"{i}.png").exists() for i in range(4))
    finally:
        pipe.__class__ = base


def test_oom_at_batch_one_is_retryable_gpu_out_of_memory(make_service, tiny_models, images, tmp_path):
    pipe = load_tiny(tiny_models, "instruct-pix2pix")
    pipe, calls, base = _oom_pipe(pipe, fail_above=0)
    try:
        svc = make_service("instruct-pix2pix", pipe=pipe)
        with pytest.raises(ApplicationError) as ei:
            ActivityEnvironment().run(svc.edit_image_gpu, request(
                tiny_models["instruct-pix2pix"], "instruct-pix2pix", [images["red"]], str(tmp_path / "o.png")))
        assert ei.value.type == "GpuOutOfMemory" and not ei.value.non_retryable
        assert calls == [1]
        assert not (tmp_path / "o.png").exists()
    finally:
        pipe.__class__ = base
