"""Batched Qwen-Image-Edit under attention kernels without mask support: prompts of different token lengths are
padded, the padding becomes an attention mask, and flash/sage kernels raise on it. With such a backend rows batch
only with prompts of equal token length; with a mask-capable one (native SDPA, cuDNN, varlen flash) any lengths."""

from __future__ import annotations

import pytest
from PIL import Image

from atelier_gpu.engine import Engine
from atelier_gpu.models import attention_takes_mask, get_adapter
from tiny_pipelines import qwen2_tokenizer


def _pipe():
    from diffusers import QwenImageEditPipeline

    # the real pipeline class with its tokenizer and no weights: the tokenizer is all the grouping reads
    return QwenImageEditPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=qwen2_tokenizer(),
                                 processor=None, transformer=None)


def _keys(backend: str | None, prompts: list[str]) -> list:
    adapter = Engine(_pipe(), get_adapter("qwen", attention_backend=backend), max_batch=4).adapter
    settings = adapter.resolve({})
    image = Image.new("RGB", (96, 64), (10, 20, 30))
    return [adapter.prepare(p, [image], i, settings).batch_key(adapter) for i, p in enumerate(prompts)]


@pytest.mark.parametrize("backend", ["flash", "_flash_3", "_native_flash", "sage"])
def test_maskless_backends_batch_only_equal_length_prompts(backend):
    short_a, short_b, long_ = _keys(backend, ["make it red", "make it tan", "make the sky a deep shade of violet"])
    assert short_a == short_b
    assert short_a != long_


@pytest.mark.parametrize("backend", [None, "native", "_native_cudnn", "flash_varlen", "_flash_varlen_3", "flex"])
def test_mask_capable_backends_batch_any_lengths(backend):
    keys = _keys(backend, ["make it red", "make the sky a deep shade of violet"])
    assert keys[0] == keys[1]


def test_backend_table():
    assert attention_takes_mask(None) and attention_takes_mask("_native_cudnn") and attention_takes_mask("xformers")
    assert not attention_takes_mask("_flash_3_hub") and not attention_takes_mask("_sage_qk_int8_pv_fp8_cuda")


def test_native_attention_batches_different_prompt_lengths(make_service, tiny_models, images, tmp_path,
                                                           decode_barrier):
    """With the default (mask-capable) attention, rows of different prompt lengths share one call and both
    finish: the padding mask diffusers builds is accepted."""
    import threading

    from temporalio.testing import ActivityEnvironment

    from conftest import request

    decode_barrier(2)
    svc = make_service("qwen", batch_size=2, max_wait_s=2.0)
    results, errors = {}, []

    def row(i, prompt):
        try:
            results[i] = ActivityEnvironment().run(svc.edit_image_gpu, request(
                tiny_models["qwen"], "qwen", [images["red"]], str(tmp_path / f"{i}.png"), row_index=i, seed=i,
                prompt=prompt, params={"num_inference_steps": 2}))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=row, args=(i, p)) for i, p in enumerate(["red", "make the sky violet"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert [results[i]["batch_size"] for i in (0, 1)] == [2, 2]
