"""Speed options on the CPU: parsing, clear refusals where an option cannot work, and that each hook really lands
on the pipeline (scheduler, defaults, cache hooks, warm-up sizes). Their speed and quality need a GPU and are not
measured here (see README)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from atelier_gpu import speed, worker
from atelier_gpu.engine import Engine
from atelier_gpu.loading import LoadOptions, load_pipeline
from atelier_gpu.models import get_adapter
from atelier_gpu.speed import SpeedOptionError, SpeedOptions
from conftest import TEST_AREA


def test_worker_flags_parse():
    args = worker.build_parser().parse_args([
        "--model", "m", "--preset", "lightning", "--quantize", "fp8", "--cache", "magcache", "--cache-threshold",
        "0.1", "--cache-mag-ratios", "r.json", "--warmup-sizes", "1024x1024, 832x1248"])
    assert (args.preset, args.quantize, args.cache, args.cache_threshold, args.cache_mag_ratios) == \
        ("lightning", "fp8", "magcache", 0.1, "r.json")
    assert args.warmup_sizes == [(1024, 1024), (832, 1248)]


@pytest.mark.parametrize("argv, message", [
    (["--warmup-sizes", "1024"], "'1024' is not WIDTHxHEIGHT"),
    (["--cache", "deep"], "invalid choice: 'deep'"),
    (["--quantize", "int4"], "invalid choice: 'int4'"),
])
def test_bad_flags_are_named(capsys, argv, message):
    with pytest.raises(SystemExit):
        worker.build_parser().parse_args(["--model", "m", *argv])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("model_type, options, loras, message", [
    ("flux-kontext", SpeedOptions(preset="lightning"), True, "no Lightning preset for model type flux-kontext"),
    ("qwen-plus", SpeedOptions(preset="lightning"), False, "needs the Lightning LoRA for this model: pass --lora"),
    ("qwen", SpeedOptions(cache="magcache"), False, "--cache magcache needs ratios calibrated for model type qwen"),
    ("instruct-pix2pix", SpeedOptions(cache="first-block"), False, "UNet has no cache hooks"),
    ("flux2-klein", SpeedOptions(cache="first-block"), False, "FirstBlockCache fails on the flux2-klein denoiser"),
    ("flux-kontext", SpeedOptions(cache="taylorseer"), False, "FluxKontextPipeline does not run its denoiser in a "
                                                               "cache context"),
])
def test_options_that_cannot_work_are_refused_with_what_to_do(model_type, options, loras, message):
    with pytest.raises(SpeedOptionError, match=message):
        speed.check(options, get_adapter(model_type), "cpu", has_loras=loras)


def test_fp8_refused_without_torchao_or_fp8_gpu():
    with pytest.raises(SpeedOptionError, match="--quantize fp8 needs (torchao|a CUDA GPU)"):
        speed.check(SpeedOptions(quantize="fp8"), get_adapter("qwen"), "cpu", has_loras=False)


def test_bad_mag_ratio_files(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(SpeedOptionError, match=r"r.json: expected a non-empty JSON list of numbers"):
        speed.check(SpeedOptions(cache="magcache", cache_mag_ratios=str(bad)), get_adapter("qwen"), "cpu", False)
    with pytest.raises(SpeedOptionError, match=r"missing.json: cannot read"):
        speed.check(SpeedOptions(cache="magcache", cache_mag_ratios=str(tmp_path / "missing.json")),
                    get_adapter("qwen"), "cpu", False)


def test_refused_before_loading():
    # the check runs before from_pretrained: a folder that is not a model at all still gets the option's message
    with pytest.raises(SpeedOptionError, match="no Lightning preset"):
        load_pipeline("/nonexistent/model", get_adapter("flux-kontext"),
                      LoadOptions(device="cpu", loras=[("x.safetensors", 1.0)],
                                  speed=SpeedOptions(preset="lightning")))


def test_lightning_preset_sets_scheduler_steps_and_cfg_off():
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline

    pipe = QwenImageEditPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
                                 tokenizer=None, processor=None, transformer=None)
    adapter = get_adapter("qwen-plus", worker_overrides={"negative_prompt": "ugly"})
    speed.apply_preset(pipe, adapter, SpeedOptions(preset="lightning"))
    config = pipe.scheduler.config
    assert config.time_shift_type == "exponential" and config.shift == 1.0
    assert config.base_shift == pytest.approx(np.log(3)) and config.max_shift == pytest.approx(np.log(3))
    s = adapter.resolve({})
    assert (s.num_inference_steps, s.true_cfg_scale, s.negative_prompt) == (8, 1.0, "ugly")
    assert adapter.resolve({"num_inference_steps": 4}).num_inference_steps == 4  # a row still overrides


@pytest.mark.parametrize("model_type, cache, extra", [
    ("flux2-klein", "taylorseer", {}),
    ("flux-kontext", "magcache", {}),  # FLUX.1's built-in ratios
])
def test_cache_hook_is_applied_and_pipeline_runs_twice(tiny_models, model_type, cache, extra):
    adapter = get_adapter(model_type, max_area=TEST_AREA)
    pipe = load_pipeline(tiny_models[model_type], adapter,
                         LoadOptions(device="cpu", speed=SpeedOptions(cache=cache, **extra)))
    assert pipe.transformer.is_cache_enabled
    engine = Engine(pipe, adapter)
    settings = adapter.resolve({"num_inference_steps": adapter.defaults.num_inference_steps if cache == "magcache"
                                else 4})
    row = adapter.prepare("make it blue", [Image.new("RGB", (64, 64), (200, 30, 30))], 1, settings)
    first, again = engine.generate([row])[0], engine.generate([row])[0]
    assert np.isfinite(first).all() and first.shape == again.shape  # the cache state resets between calls


def test_magcache_with_calibrated_ratio_file(tiny_models, tmp_path):
    ratios = tmp_path / "qwen-ratios.json"
    ratios.write_text(json.dumps([1.0] * 10))
    config = speed.cache_config(SpeedOptions(cache="magcache", cache_mag_ratios=str(ratios), cache_threshold=0.03),
                                get_adapter("qwen"))
    assert config.threshold == 0.03 and config.num_inference_steps == 50 and len(config.mag_ratios) == 50


def test_warmup_runs_each_size(tiny_models):
    from conftest import load_tiny

    engine = Engine(load_tiny(tiny_models, "flux-kontext"), get_adapter("flux-kontext", max_area=TEST_AREA))
    engine.warmup(steps=1, sizes=[(64, 64), (96, 48)])
    assert engine.warmed_sizes == [(64, 64), (96, 48)]
    engine.warmup(steps=1)
    assert engine.warmed_sizes == [(64, 64)]  # the --max-area square


def test_first_block_cache_fails_on_mixed_block_denoisers_so_it_is_refused(tiny_models):
    """Why first-block is refused for FLUX.2/LongCat: with the check bypassed, the installed diffusers' hook breaks
    at the first step. If a diffusers upgrade fixes it, this test fails and the refusal can go."""
    adapter = get_adapter("flux2-klein", max_area=TEST_AREA)
    pipe = load_pipeline(tiny_models["flux2-klein"], adapter, LoadOptions(device="cpu"))
    speed.apply_cache(pipe.transformer, adapter, SpeedOptions(cache="first-block"))
    settings = adapter.resolve({"num_inference_steps": 2})
    row = adapter.prepare("make it blue", [Image.new("RGB", (64, 64), (200, 30, 30))], 1, settings)
    with pytest.raises(TypeError, match="unsupported operand"):
        Engine(pipe, adapter).generate([row])
