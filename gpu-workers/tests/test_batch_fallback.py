"""A batch the pipeline rejects is run again row by row before any row fails: one row's problem (or a batch-only
problem such as diffusers' "attn_mask is not supported for flash-attn 3" on padded Qwen prompts) never fails the
rows it happened to share a call with."""

from __future__ import annotations

import functools
import threading

from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from conftest import load_tiny, request


def _failing_pipe(real, fails):
    """The same pipeline object, whose __call__ raises `fails(prompts)` when that returns an exception."""
    base = type(real)
    calls: list[int] = []

    class Failing(base):  # type: ignore[misc, valid-type]
        @functools.wraps(base.__call__)
        def __call__(self, *args, **kwargs):
            prompt = kwargs.get("prompt")
            prompts = prompt if isinstance(prompt, list) else [prompt]
            calls.append(len(prompts))
            error = fails(prompts)
            if error is not None:
                raise error
            return base.__call__(self, *args, **kwargs)

    real.__class__ = Failing
    return real, calls, base


def _run_rows(svc, tiny_models, images, tmp_path, prompts):
    results, errors = {}, {}

    def worker(i, prompt):
        try:
            results[i] = ActivityEnvironment().run(svc.edit_image_gpu, request(
                tiny_models["instruct-pix2pix"], "instruct-pix2pix", [images["red"]], str(tmp_path / f"{i}.png"),
                seed=i, row_index=i, prompt=prompt))
        except Exception as e:  # noqa: BLE001
            errors[i] = e

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results, errors


def test_batch_only_failure_reruns_each_row_alone(make_service, tiny_models, images, tmp_path, decode_barrier):
    decode_barrier(3)
    flash = ValueError("`attn_mask` is not supported for flash-attn 3.")
    pipe, calls, base = _failing_pipe(load_tiny(tiny_models, "instruct-pix2pix"),
                                      lambda prompts: flash if len(prompts) > 1 else None)
    try:
        svc = make_service("instruct-pix2pix", batch_size=3, max_wait_s=2.0, pipe=pipe)
        results, errors = _run_rows(svc, tiny_models, images, tmp_path, ["a", "bb", "ccc"])
        assert not errors, errors
        assert calls == [3, 1, 1, 1]
        assert sorted(r["batch_size"] for r in results.values()) == [1, 1, 1]
        assert all((tmp_path / f"{i}.png").exists() for i in range(3))
    finally:
        pipe.__class__ = base


def test_one_bad_row_fails_alone(make_service, tiny_models, images, tmp_path, decode_barrier):
    decode_barrier(3)
    pipe, calls, base = _failing_pipe(
        load_tiny(tiny_models, "instruct-pix2pix"),
        lambda prompts: ValueError("this prompt breaks the pipeline") if "poison" in prompts else None)
    try:
        svc = make_service("instruct-pix2pix", batch_size=3, max_wait_s=2.0, pipe=pipe)
        results, errors = _run_rows(svc, tiny_models, images, tmp_path, ["fine", "poison", "also fine"])
        assert sorted(results) == [0, 2] and sorted(errors) == [1]
        err = errors[1]
        assert isinstance(err, ApplicationError) and err.type == "InvalidRequest" and err.non_retryable
        assert "this prompt breaks the pipeline" in str(err)
        assert calls[0] == 3 and sorted(calls[1:]) == [1, 1, 1]
        assert not (tmp_path / "1.png").exists()
    finally:
        pipe.__class__ = base
