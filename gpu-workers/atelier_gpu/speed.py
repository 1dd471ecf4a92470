"""Speed options: fewer FLOPs (a distilled Lightning LoRA with its scheduler and CFG off, step caching) and faster
FLOPs (FP8 weights and activations through torchao). Each trades some quality for speed; none is on by default.

The 12B-20B editing models are compute-bound at batch 1 (a 1024^2 Qwen edit does ~4,100 FLOP per weight byte), so
batching rows barely helps them; these options are the levers that do. Every option is checked before the model
loads, and an option that cannot work here (no torchao, no FP8-capable GPU, a model type without a preset, missing
calibration) stops the worker with a message saying what to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import ADAPTERS, Defaults, ModelAdapter

PRESETS = ("lightning",)
QUANTIZATIONS = ("fp8",)
CACHES = ("first-block", "taylorseer", "magcache")

# Lightning (lightx2v/Qwen-Image-Lightning): distilled to 8 (or 4) steps without CFG, trained with an exponential
# time shift of log(3) on FlowMatchEulerDiscreteScheduler (the scheduler config its card and diffusers' Qwen-Image
# docs prescribe). The LoRA itself is the user's choice of file (4 or 8 steps, V1/V2, per model version).
LIGHTNING_SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
LIGHTNING_TYPES = ("qwen", "qwen-plus")
LIGHTNING_STEPS = 8

# FP8 tensor cores: Ada (8.9) and Hopper (9.0) and later
FP8_MIN_CAPABILITY = (8, 9)


class SpeedOptionError(ValueError):
    """A speed option that cannot work with this model, device or installation; the message says what to do."""


@dataclass
class SpeedOptions:
    preset: str | None = None  # "lightning"
    quantize: str | None = None  # "fp8"
    cache: str | None = None  # "first-block" | "taylorseer" | "magcache"
    cache_threshold: float | None = None  # first-block / magcache threshold (None: diffusers' default)
    cache_mag_ratios: str | None = None  # JSON file with MagCache's calibrated ratios


def check(options: SpeedOptions, adapter: ModelAdapter, device: str, has_loras: bool) -> None:
    """Refuse, before anything loads, the options that cannot work here."""
    if options.preset is not None:
        if options.preset not in PRESETS:
            raise SpeedOptionError(f"--preset {options.preset}: unknown; one of {', '.join(PRESETS)}")
        if adapter.model_type not in LIGHTNING_TYPES:
            raise SpeedOptionError(f"--preset lightning: no Lightning preset for model type {adapter.model_type} "
                                   f"(there is one for {', '.join(LIGHTNING_TYPES)})")
        if not has_loras:
            raise SpeedOptionError(
                "--preset lightning needs the Lightning LoRA for this model: pass --lora FILE_OR_HUB_ID, e.g. a "
                "Qwen-Image-Edit(-2509/2511)-Lightning-8steps .safetensors from lightx2v/Qwen-Image-Lightning")
    if options.quantize is not None:
        if options.quantize not in QUANTIZATIONS:
            raise SpeedOptionError(f"--quantize {options.quantize}: unknown; one of {', '.join(QUANTIZATIONS)}")
        _check_fp8(device)
    if options.cache is not None:
        if options.cache not in CACHES:
            raise SpeedOptionError(f"--cache {options.cache}: unknown; one of {', '.join(CACHES)}")
        if adapter.model_type == "instruct-pix2pix":
            raise SpeedOptionError("--cache: the instruct-pix2pix UNet has no cache hooks in diffusers "
                                   "(they are for transformer denoisers)")
        if options.cache in ("first-block", "taylorseer") and not adapter.cache_context:
            with_context = sorted(t for t, a in ADAPTERS.items() if a.cache_context)
            raise SpeedOptionError(
                f"--cache {options.cache}: the installed diffusers' {adapter.pipeline_class} does not run its "
                f"denoiser in a cache context, which this hook needs (it works for {', '.join(with_context)}; "
                "--cache magcache does not need one)")
        if options.cache == "first-block" and not adapter.first_block_cache:
            raise SpeedOptionError(
                f"--cache first-block: diffusers' FirstBlockCache fails on the {adapter.model_type} denoiser "
                "(double-stream then single-stream blocks); use --cache taylorseer or magcache")
        if options.cache == "magcache":
            mag_ratios(options, adapter)  # raises when there are none


def _check_fp8(device: str) -> None:
    try:
        import torchao  # noqa: F401 - only its presence is checked here
    except ImportError:
        raise SpeedOptionError(
            "--quantize fp8 needs torchao, which is not installed in the GPU workers' venv: install it there "
            "(pip install torchao, a release matching the installed torch)") from None
    if not device.startswith("cuda"):
        raise SpeedOptionError(f"--quantize fp8 needs a CUDA GPU with FP8 tensor cores; the device is {device}")
    import torch

    if not torch.cuda.is_available():
        raise SpeedOptionError("--quantize fp8 needs a CUDA GPU; torch sees none")
    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        raise SpeedOptionError(
            f"--quantize fp8 needs FP8 tensor cores (compute capability >= 8.9: Ada, Hopper or later); "
            f"{torch.cuda.get_device_name()} is {capability[0]}.{capability[1]}")


def quantization_config(options: SpeedOptions) -> Any | None:
    """The from_pretrained quantization_config for --quantize: FP8 weights and dynamic FP8 activations, per row,
    on the denoiser only (text encoders and VAE stay in bf16: they run once per image, not once per step)."""
    if options.quantize != "fp8":
        return None
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    fp8 = TorchAoConfig(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return PipelineQuantizationConfig(quant_mapping={"transformer": fp8})


def apply_preset(pipe: Any, adapter: ModelAdapter, options: SpeedOptions) -> None:
    """Lightning: its scheduler on the pipeline, and defaults of 8 steps with CFG off (true_cfg_scale 1 makes the
    Qwen pipelines skip the unconditional pass: half the forwards per step). Row params still override."""
    if options.preset != "lightning":
        return
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(LIGHTNING_SCHEDULER)
    d = adapter.defaults
    adapter.defaults = Defaults(num_inference_steps=LIGHTNING_STEPS, guidance_scale=d.guidance_scale,
                                true_cfg_scale=1.0, negative_prompt=d.negative_prompt,
                                image_guidance_scale=d.image_guidance_scale)


def mag_ratios(options: SpeedOptions, adapter: ModelAdapter) -> list[float]:
    """MagCache's per-step magnitude ratios: calibrated per model. diffusers ships FLUX.1's; others come from a
    file (run once with diffusers' MagCacheConfig(calibrate=True) and save the printed list as JSON)."""
    if options.cache_mag_ratios:
        path = Path(options.cache_mag_ratios)
        try:
            ratios = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SpeedOptionError(f"--cache-mag-ratios {path}: cannot read a JSON list of numbers ({e})") from None
        if not isinstance(ratios, list) or not ratios or not all(isinstance(r, (int, float)) for r in ratios):
            raise SpeedOptionError(f"--cache-mag-ratios {path}: expected a non-empty JSON list of numbers")
        return [float(r) for r in ratios]
    if adapter.model_type == "flux-kontext":
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        return [float(r) for r in FLUX_MAG_RATIOS]
    raise SpeedOptionError(
        f"--cache magcache needs ratios calibrated for model type {adapter.model_type}: pass --cache-mag-ratios "
        "FILE (a JSON list from a calibration run with diffusers' MagCacheConfig(calibrate=True)); diffusers "
        "ships FLUX.1's only")


def cache_config(options: SpeedOptions, adapter: ModelAdapter) -> Any | None:
    if options.cache is None:
        return None
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if options.cache == "first-block":
        return FirstBlockCacheConfig(**({} if options.cache_threshold is None else
                                        {"threshold": options.cache_threshold}))
    if options.cache == "taylorseer":
        return TaylorSeerCacheConfig()
    kwargs: dict[str, Any] = {"mag_ratios": mag_ratios(options, adapter),
                              "num_inference_steps": adapter.defaults.num_inference_steps}
    if options.cache_threshold is not None:
        kwargs["threshold"] = options.cache_threshold
    return MagCacheConfig(**kwargs)


def apply_cache(denoiser: Any, adapter: ModelAdapter, options: SpeedOptions) -> None:
    config = cache_config(options, adapter)
    if config is None:
        return
    if denoiser is None or not hasattr(denoiser, "enable_cache"):
        raise SpeedOptionError(f"--cache {options.cache}: {type(denoiser).__name__} has no cache hooks")
    denoiser.enable_cache(config)
