"""The one function that loads a pipeline, used by the worker, the benchmark and the tests alike."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from . import speed
from .models import ADAPTERS, ModelAdapter
from .speed import SpeedOptions

log = logging.getLogger("atelier_gpu.loading")


class PipelineUnavailable(RuntimeError):
    """The installed diffusers has no class for this model type."""


@dataclass
class LoadOptions:
    device: str = "auto"  # auto | cuda | cuda:N | cpu
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    attention_backend: str | None = None  # diffusers set_attention_backend name, e.g. "_native_cudnn", "flash"
    compile: bool = False  # torch.compile the denoiser's repeated blocks (or the whole denoiser)
    compile_dynamic: bool = False
    compile_mode: str | None = None  # e.g. "max-autotune-no-cudagraphs"
    cpu_offload: str = "none"  # none | model | sequential | group
    loras: list[tuple[str, float]] = field(default_factory=list)  # (path, file or hub id; scale)
    fuse_lora: bool = True
    variant: str | None = None  # e.g. "fp16"
    revision: str | None = None
    local_files_only: bool | None = None  # None: True when HF_HUB_OFFLINE=1 or the model is a local dir
    speed: SpeedOptions = field(default_factory=SpeedOptions)  # --preset / --quantize / --cache


def pipeline_class(adapter: ModelAdapter):
    """The diffusers class for `adapter`, or PipelineUnavailable saying which diffusers version is needed."""
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover
        raise PipelineUnavailable(f"diffusers is not installed: {e}") from e
    cls = getattr(diffusers, adapter.pipeline_class, None)
    if cls is None:
        raise PipelineUnavailable(
            f"model type {adapter.model_type} needs diffusers.{adapter.pipeline_class}, which diffusers "
            f"{diffusers.__version__} does not have (needs diffusers >= {adapter.min_diffusers}; "
            "gpu-workers/requirements.txt pins a version that has it)"
        )
    return cls


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; one of auto, bf16, fp16, fp32")
    return table[dtype]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _dtype_kwarg() -> str:
    """diffusers >= 0.42 takes `dtype` (torch_dtype is deprecated); older ones take `torch_dtype`."""
    try:
        from diffusers.utils import deprecation_utils

        if hasattr(deprecation_utils, "_resolve_dtype"):
            return "dtype"
    except ImportError:
        pass
    return "torch_dtype"


def _quiet_loading() -> None:
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


def denoiser_of(pipe) -> Any:
    for name in ("transformer", "unet"):
        m = getattr(pipe, name, None)
        if m is not None:
            return m
    return None


def load_pipeline(model: str, adapter: ModelAdapter, options: LoadOptions | None = None):
    """Load `model` (a local folder saved with save_pretrained, or a hub id) as adapter's pipeline class.

    Local folders never touch the network; hub ids honour HF_HUB_OFFLINE / local_files_only (the hub cache).
    Returns the pipeline, on its device, progress bars off, ready to call.
    """
    import torch

    opts = options or LoadOptions()
    cls = pipeline_class(adapter)
    missing = [name for name in adapter.requires if importlib.util.find_spec(name) is None]
    if missing:
        raise PipelineUnavailable(
            f"model type {adapter.model_type} needs the Python package(s) {', '.join(missing)}, which "
            f"diffusers' {adapter.pipeline_class} imports only if installed and gpu-workers/requirements.txt does "
            f"not pin: pip install {' '.join(missing)} into the worker's environment")
    device = resolve_device(opts.device)
    dtype_name = opts.dtype
    if adapter.only_dtype is not None:
        if opts.dtype != "auto" and resolve_dtype(opts.dtype, device) != resolve_dtype(adapter.only_dtype, device):
            raise ValueError(f"model type {adapter.model_type} runs only in {adapter.only_dtype} "
                             f"(--dtype {opts.dtype} given)")
        dtype_name = adapter.only_dtype
    dtype = resolve_dtype(dtype_name, device)
    local = os.path.isdir(model)
    local_only = opts.local_files_only if opts.local_files_only is not None else (local or hub_offline())
    speed.check(opts.speed, adapter, device, has_loras=bool(opts.loras))  # before minutes of loading

    kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, "local_files_only": local_only}
    if opts.variant:
        kwargs["variant"] = opts.variant
    if opts.revision:
        kwargs["revision"] = opts.revision
    quantization = speed.quantization_config(opts.speed)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if adapter.model_type == "instruct-pix2pix":
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    log.info("loading %s as %s (dtype=%s, device=%s, local_files_only=%s)", model, cls.__name__, dtype, device,
             local_only)
    _quiet_loading()
    pipe = cls.from_pretrained(model, **kwargs)

    for i, (ref, _scale) in enumerate(opts.loras):  # scales are set together below
        name = f"lora{i}"
        lkw: dict[str, Any] = {"adapter_name": name}
        if os.path.isfile(ref):
            lkw["weight_name"] = os.path.basename(ref)
            ref = os.path.dirname(os.path.abspath(ref))
        if local_only:
            lkw["local_files_only"] = True
        pipe.load_lora_weights(ref, **lkw)
    if opts.loras:
        names = [f"lora{i}" for i in range(len(opts.loras))]
        pipe.set_adapters(names, adapter_weights=[s for _, s in opts.loras])
        if opts.fuse_lora:
            pipe.fuse_lora(adapter_names=names)
            pipe.unload_lora_weights()  # the fused weights stay; the per-step LoRA overhead goes

    speed.apply_preset(pipe, adapter, opts.speed)

    if opts.cpu_offload == "none":
        pipe.to(device)
    elif opts.cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif opts.cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif opts.cpu_offload == "group":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_type="leaf_level",
                                  use_stream=device.startswith("cuda"))
    else:
        raise ValueError(f"unknown cpu_offload {opts.cpu_offload!r}; one of none, model, sequential, group")

    den = denoiser_of(pipe)
    if opts.attention_backend:
        if den is None or not hasattr(den, "set_attention_backend"):
            raise ValueError(f"{cls.__name__} does not support set_attention_backend")
        den.set_attention_backend(opts.attention_backend)
    speed.apply_cache(den, adapter, opts.speed)
    if opts.compile and den is not None:
        ckw: dict[str, Any] = {"fullgraph": True, "dynamic": opts.compile_dynamic or None}
        if opts.compile_mode:
            ckw["mode"] = opts.compile_mode
        if getattr(den, "_repeated_blocks", None):
            den.compile_repeated_blocks(**ckw)
        else:
            ckw["fullgraph"] = False
            den.compile(**ckw)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pipe.set_progress_bar_config(disable=True)
    return pipe


__all__ = ["ADAPTERS", "LoadOptions", "PipelineUnavailable", "load_pipeline", "pipeline_class", "denoiser_of"]
