"""Weight-free checks of every adapter against the installed diffusers: the keyword arguments the engine passes
to a pipeline call are parameters of that pipeline class's __call__, and checkpoint-dependent defaults follow
the loaded pipeline's config. A diffusers upgrade that renames or drops an argument fails here, not on a GPU."""

from __future__ import annotations

import inspect

import pytest
from PIL import Image

from atelier_gpu import models
from atelier_gpu.loading import pipeline_class

# what Engine.generate adds to the adapter's kwargs
ENGINE_KWARGS = ("generator", "output_type")
STEP_CALLBACK_KWARGS = ("callback_on_step_end", "callback_on_step_end_tensor_inputs")

# a value for every request param an adapter may take
PARAM_VALUES = {"num_inference_steps": 3, "guidance_scale": 2.0, "true_cfg_scale": 3.0, "negative_prompt": "blurry",
                "height": 512, "width": 512}


def _rows(adapter: models.ModelAdapter, n_rows: int) -> list[models.PreparedRow]:
    settings = adapter.resolve({k: v for k, v in PARAM_VALUES.items() if k in adapter.supports})
    images = [Image.new("RGB", (96, 64), (9 * i, 40, 90)) for i in range(min(2, adapter.max_images))]
    return [adapter.prepare(f"prompt {i}", images if n_rows == 1 else images[:1], i, settings) for i in range(n_rows)]


@pytest.mark.parametrize("model_type", sorted(models.ADAPTERS))
def test_call_kwargs_are_accepted_by_the_pipeline(model_type):
    adapter = models.get_adapter(model_type)
    params = inspect.signature(pipeline_class(adapter).__call__).parameters
    sizes = (1, 2) if adapter.batchable else (1,)
    for n in sizes:
        kwargs = adapter.call_kwargs(_rows(adapter, n))
        extra = [*ENGINE_KWARGS, *(STEP_CALLBACK_KWARGS if adapter.has_step_callback else ())]
        # named parameters only: a **kwargs catch-all (pix2pix has one) swallows a misspelt argument silently
        unknown = sorted(k for k in [*kwargs, *extra] if k not in params or params[k].kind is params[k].VAR_KEYWORD)
        assert not unknown, f"{pipeline_class(adapter).__name__}.__call__ takes no {unknown}"


@pytest.mark.parametrize("model_type", sorted(models.ADAPTERS))
def test_declared_step_callback_matches_the_pipeline(model_type):
    adapter = models.get_adapter(model_type)
    params = inspect.signature(pipeline_class(adapter).__call__).parameters
    assert adapter.has_step_callback == ("callback_on_step_end" in params)


def _klein(is_distilled: bool, cls_name: str = "Flux2KleinPipeline"):
    import diffusers

    # a real pipeline object with no components: its config is what the worker reads
    return getattr(diffusers, cls_name)(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                        transformer=None, is_distilled=is_distilled)


def test_klein_base_models_get_base_defaults():
    from atelier_gpu.engine import Engine

    base = Engine(_klein(is_distilled=False), models.get_adapter("flux2-klein")).adapter.resolve({})
    assert (base.num_inference_steps, base.guidance_scale) == (50, 4.0)
    distilled = Engine(_klein(is_distilled=True), models.get_adapter("flux2-klein")).adapter.resolve({})
    assert (distilled.num_inference_steps, distilled.guidance_scale) == (4, 1.0)
    # worker flags and row params still win over either
    adapter = models.get_adapter("flux2-klein", worker_overrides={"num_inference_steps": 30})
    settings = Engine(_klein(is_distilled=False), adapter).adapter.resolve({"guidance_scale": 3.0})
    assert (settings.num_inference_steps, settings.guidance_scale) == (30, 3.0)


@pytest.mark.parametrize("model_type", sorted(models.ADAPTERS))
def test_declared_cache_context_matches_the_pipeline(model_type):
    # FirstBlockCache / TaylorSeer need the pipeline to call its denoiser inside transformer.cache_context(...)
    adapter = models.get_adapter(model_type)
    source = inspect.getsource(pipeline_class(adapter).__call__)
    assert adapter.cache_context == ("cache_context(" in source)
