"""Model types: one adapter per diffusers edit pipeline, behind one interface.

An adapter knows
- which diffusers pipeline class serves the model type (imported lazily, with a clear error when the installed
  diffusers lacks it),
- the per-model defaults (steps, guidance, true_cfg_scale, negative prompt), overridable per worker and per row,
- which request params the pipeline accepts, how many input images it takes and whether rows can be batched,
- how to prepare inputs on a CPU thread (decode is done by the caller; the adapter resizes to the exact size the
  pipeline would use, so the pipeline's own resize is a no-op and the GPU thread does no image work), and
- how to turn a batch of prepared rows into the keyword arguments of one pipeline call.

Nothing here imports torch or diffusers at module import time.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_MAX_AREA = 1024 * 1024

# FLUX.1 Kontext's preferred resolutions (the model was trained on these); same list as diffusers'
# PREFERRED_KONTEXT_RESOLUTIONS, kept here so preparing inputs needs no diffusers import.
KONTEXT_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688),
    (1568, 672),
)


class UnknownModelType(ValueError):
    """--model-type is not given and cannot be told from the model, or names no model type."""


class InvalidParams(ValueError):
    """The request does not fit the model type (unsupported param, too many images...)."""


@dataclass(frozen=True)
class Defaults:
    num_inference_steps: int
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None
    image_guidance_scale: float | None = None  # instruct-pix2pix only


@dataclass(frozen=True)
class Settings:
    """Resolved generation settings of one row (defaults < worker flags < request params). Hashable: rows
    with equal settings (and equal image sizes) may share one pipeline call."""

    num_inference_steps: int
    guidance_scale: float | None
    true_cfg_scale: float | None
    negative_prompt: str | None
    image_guidance_scale: float | None
    height: int | None
    width: int | None


@dataclass
class PreparedRow:
    """A row ready for the GPU: images decoded and resized on a CPU thread."""

    prompt: str
    images: list[Image.Image]
    seed: int
    settings: Settings
    out_size: tuple[int, int] | None  # (width, height) passed to the pipeline, when the model takes one
    # rows batch only with rows whose prompts have this many tokens (None: any length); see QwenEditAdapter
    prompt_tokens: int | None = None

    def batch_key(self, adapter: "ModelAdapter") -> tuple | None:
        """Rows with equal keys may be batched; None = never batch this row."""
        if not adapter.batchable:
            return None
        return (adapter.model_type, self.settings, self.out_size, tuple(im.size for im in self.images),
                self.prompt_tokens)


# Attention kernels that raise on an attention mask ("`attn_mask` is not supported for flash-attn 3"); their
# varlen forms take one (as cumulative sequence lengths), as do native SDPA, cuDNN, flex and xformers.
_MASKLESS_ATTENTION = ("flash", "sage", "aiter")


def attention_takes_mask(backend: str | None) -> bool:
    """Whether a diffusers attention backend accepts an attention mask (None: the default, native SDPA)."""
    if backend is None:
        return True
    name = backend.lower()
    return "varlen" in name or not any(kind in name for kind in _MASKLESS_ATTENTION)


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def fit_area(width: int, height: int, max_area: int, multiple: int) -> tuple[int, int]:
    """(w, h) with the aspect ratio of width x height, area <= max_area (no upscaling), multiples of `multiple`."""
    scale = min(1.0, math.sqrt(max_area / float(width * height)))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def area_dims(target_area: int, ratio: float, multiple: int) -> tuple[int, int]:
    """(w, h) of area ~target_area at aspect ratio w/h = ratio, rounded to `multiple` (Qwen/LongCat's rule)."""
    w = math.sqrt(target_area * ratio)
    h = w / ratio
    return _round_to(w, multiple), _round_to(h, multiple)


def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    if im.size == size:
        return im
    return im.resize(size, Image.Resampling.LANCZOS)


class ModelAdapter:
    model_type: str = ""
    pipeline_class: str = ""
    min_diffusers: str = "0.35"
    batchable: bool = False
    max_images: int = 1
    defaults: Defaults = Defaults(num_inference_steps=28)
    # request params (contract GenerationParams keys) this pipeline takes
    supports: frozenset[str] = frozenset({"num_inference_steps", "guidance_scale"})
    has_step_callback: bool = True
    multiple: int = 16  # output/input sizes are multiples of this
    min_side: int = 0  # inputs smaller than this on a side are scaled up to it (0: no minimum)
    # whether the pipeline runs its denoiser inside `transformer.cache_context(...)`, which diffusers' FirstBlockCache
    # and TaylorSeer hooks need (tests/test_adapter_signatures.py checks this against the installed pipeline)
    cache_context: bool = False
    # diffusers 0.42.1's FirstBlockCache fails on denoisers that end in a different block kind than they start
    # (FLUX.2 and LongCat: double-stream, then single-stream blocks): "unsupported operand type(s) for -: 'Tensor'
    # and 'list'" at the first step. Qwen-Image has one block kind.
    first_block_cache: bool = False
    # the one dtype the pipeline runs in, when it hard-codes one (None: any; --dtype auto picks bf16 on CUDA)
    only_dtype: str | None = None
    # Python packages the pipeline imports at call time that gpu-workers/requirements.txt does not pin
    requires: tuple[str, ...] = ()

    def __init__(self, max_area: int = DEFAULT_MAX_AREA, worker_overrides: dict[str, Any] | None = None,
                 attention_backend: str | None = None):
        self.max_area = int(max_area)
        self.attention_backend = attention_backend
        self.worker_overrides = {k: v for k, v in (worker_overrides or {}).items() if v is not None}

    # --- settings -------------------------------------------------------------------------------------------
    def resolve(self, params: dict[str, Any]) -> Settings:
        bad = sorted(k for k in params if k not in self.supports)
        if bad:
            raise InvalidParams(
                f"model type {self.model_type} does not take {', '.join(bad)} "
                f"(it takes {', '.join(sorted(self.supports))})"
            )
        d = self.defaults
        merged: dict[str, Any] = {
            "num_inference_steps": d.num_inference_steps,
            "guidance_scale": d.guidance_scale,
            "true_cfg_scale": d.true_cfg_scale,
            "negative_prompt": d.negative_prompt,
            "image_guidance_scale": d.image_guidance_scale,
            "height": None,
            "width": None,
        }
        # worker-wide flags (--guidance-scale...) apply only where the model takes them
        for k, v in self.worker_overrides.items():
            if k in self.supports:
                merged[k] = v
        merged.update(params)
        if (merged["height"] is None) != (merged["width"] is None):
            raise InvalidParams("give both height and width, or neither")
        for k in ("height", "width"):
            if merged[k] is not None and merged[k] % self.multiple:
                merged[k] = max(self.multiple, merged[k] // self.multiple * self.multiple)
        merged["num_inference_steps"] = int(merged["num_inference_steps"])
        for k in ("guidance_scale", "true_cfg_scale", "image_guidance_scale"):
            if merged[k] is not None:
                merged[k] = float(merged[k])
        return Settings(**merged)

    def check_images(self, n: int) -> None:
        if n < 1:
            raise InvalidParams(f"model type {self.model_type} needs at least one input image")
        if n > self.max_images:
            raise InvalidParams(
                f"model type {self.model_type} takes at most {self.max_images} input image(s), got {n}")

    # --- CPU side -------------------------------------------------------------------------------------------
    def prepare(self, prompt: str, images: list[Image.Image], seed: int, settings: Settings) -> PreparedRow:
        """Resize on the calling (CPU) thread. Default: cap each image at max_area, keep sizes as multiples."""
        self.check_images(len(images))
        imgs = [resize(im, self._at_least_min_side(fit_area(im.width, im.height, self.max_area, self.multiple)))
                for im in images]
        out = (settings.width, settings.height) if settings.width else None
        return PreparedRow(prompt=prompt, images=imgs, seed=seed, settings=settings, out_size=out)

    def _at_least_min_side(self, size: tuple[int, int]) -> tuple[int, int]:
        """Scale (w, h) up, keeping its aspect ratio, until both sides reach min_side (FLUX.2 refuses smaller)."""
        w, h = size
        if not self.min_side or min(w, h) >= self.min_side:
            return size
        scale = self.min_side / min(w, h)
        return (max(self.min_side, math.ceil(w * scale / self.multiple) * self.multiple),
                max(self.min_side, math.ceil(h * scale / self.multiple) * self.multiple))

    # --- GPU side -------------------------------------------------------------------------------------------
    def call_kwargs(self, rows: list[PreparedRow]) -> dict[str, Any]:
        """Keyword arguments of one pipeline call for `rows` (same batch key). No generator/callback here."""
        s = rows[0].settings
        kw: dict[str, Any] = {"num_inference_steps": s.num_inference_steps}
        if s.guidance_scale is not None:
            kw["guidance_scale"] = s.guidance_scale
        if s.true_cfg_scale is not None:
            kw["true_cfg_scale"] = s.true_cfg_scale
        if s.negative_prompt is not None:
            kw["negative_prompt"] = s.negative_prompt if len(rows) == 1 else [s.negative_prompt] * len(rows)
        if s.image_guidance_scale is not None:
            kw["image_guidance_scale"] = s.image_guidance_scale
        if len(rows) == 1:
            kw["prompt"] = rows[0].prompt
            kw["image"] = rows[0].images[0] if self.max_images == 1 else list(rows[0].images)
        else:
            kw["prompt"] = [r.prompt for r in rows]
            kw["image"] = [r.images[0] for r in rows]
        if rows[0].out_size is not None:
            kw["width"], kw["height"] = rows[0].out_size
        return kw

    def configure_for(self, pipe: Any) -> None:
        """Adjust to the loaded pipeline (called once by the Engine): defaults that depend on the checkpoint."""

    def output_images(self, out: Any) -> Any:
        """The batch's images in a pipeline call's output: an (N, H, W, C) array or a list of PIL images."""
        return out.images if hasattr(out, "images") else out[0]

    def warmup_image(self, size: tuple[int, int] | None = None) -> Image.Image:
        """A grey input of `size` (the output follows the input for types without height/width), else the
        --max-area square."""
        if size is None:
            side = max(self.multiple, int(math.sqrt(self.max_area)) // self.multiple * self.multiple)
            size = (side, side)
        return Image.new("RGB", size, (127, 127, 127))

    def describe(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "pipeline": self.pipeline_class,
            "batchable": self.batchable,
            "max_images": self.max_images,
            "defaults": {k: v for k, v in self.defaults.__dict__.items() if v is not None},
            "params": sorted(self.supports),
        }


class InstructPix2PixAdapter(ModelAdapter):
    model_type = "instruct-pix2pix"
    pipeline_class = "StableDiffusionInstructPix2PixPipeline"
    min_diffusers = "0.14"
    batchable = True
    # diffusers' call defaults are 100 steps; the model card's examples use 10-20. 50 keeps quality and halves time.
    defaults = Defaults(num_inference_steps=50, guidance_scale=7.5, image_guidance_scale=1.5)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    multiple = 8

    def prepare(self, prompt, images, seed, settings):
        # The output has the input's size: resize the input to the requested size, or cap it at max_area.
        self.check_images(len(images))
        im = images[0]
        size = (settings.width, settings.height) if settings.width else fit_area(im.width, im.height, self.max_area, 8)
        return PreparedRow(prompt=prompt, images=[resize(im, size)], seed=seed, settings=settings, out_size=None)


class SdxlInstructPix2PixAdapter(ModelAdapter):
    """InstructPix2Pix on SDXL (diffusers/sdxl-instructpix2pix-768; CosXL Edit converted to diffusers format)."""

    model_type = "sdxl-instruct-pix2pix"
    pipeline_class = "StableDiffusionXLInstructPix2PixPipeline"
    min_diffusers = "0.21"
    batchable = True
    # __call__'s defaults are 100 steps, guidance 5.0, image guidance 1.5; these are its EXAMPLE_DOC_STRING's
    # call for diffusers/sdxl-instructpix2pix-768 (30 / 3.0 / 1.5; tests/test_models.py reads them from it)
    defaults = Defaults(num_inference_steps=30, guidance_scale=3.0, image_guidance_scale=1.5)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    # only the deprecated `callback(step, t, latents)`: heartbeats hook scheduler.step (as LongCat)
    has_step_callback = False
    multiple = 8

    def prepare(self, prompt, images, seed, settings):
        # Without height/width the pipeline squares the output at unet.sample_size x 8 (768 or 1024) and squashes
        # the input to it: the input's own size, capped at --max-area, is passed instead (as pix2pix keeps it).
        self.check_images(len(images))
        im = images[0]
        size = (settings.width, settings.height) if settings.width else fit_area(im.width, im.height, self.max_area, 8)
        return PreparedRow(prompt=prompt, images=[resize(im, size)], seed=seed, settings=settings, out_size=size)


class FluxKontextAdapter(ModelAdapter):
    model_type = "flux-kontext"
    pipeline_class = "FluxKontextPipeline"
    min_diffusers = "0.35"
    batchable = True
    defaults = Defaults(num_inference_steps=30, guidance_scale=2.5, true_cfg_scale=1.0)
    supports = frozenset(
        {"num_inference_steps", "guidance_scale", "true_cfg_scale", "negative_prompt", "height", "width"}
    )
    multiple = 16

    def _bucket(self, w: int, h: int) -> tuple[int, int]:
        # Kontext's preferred-resolution buckets, scaled to max_area (identical to diffusers' at 1 MP).
        ar = w / h
        _, bw, bh = min((abs(ar - rw / rh), rw, rh) for rw, rh in KONTEXT_RESOLUTIONS)
        scale = math.sqrt(self.max_area / float(1024 * 1024))
        return (max(self.multiple, int(bw * scale) // self.multiple * self.multiple),
                max(self.multiple, int(bh * scale) // self.multiple * self.multiple))

    def prepare(self, prompt, images, seed, settings):
        self.check_images(len(images))
        im = images[0]
        cond = self._bucket(im.width, im.height)
        out = (settings.width, settings.height) if settings.width else cond
        return PreparedRow(prompt=prompt, images=[resize(im, cond)], seed=seed, settings=settings, out_size=out)

    def call_kwargs(self, rows):
        kw = super().call_kwargs(rows)
        w, h = rows[0].out_size
        kw["max_area"] = w * h  # keep the requested output size (the pipeline rescales to max_area otherwise)
        kw["_auto_resize"] = False  # images are already at their bucket (done on the CPU thread)
        return kw


class QwenEditAdapter(ModelAdapter):
    model_type = "qwen"
    pipeline_class = "QwenImageEditPipeline"
    min_diffusers = "0.35"
    batchable = True
    defaults = Defaults(num_inference_steps=50, guidance_scale=1.0, true_cfg_scale=4.0, negative_prompt=" ")
    supports = frozenset(
        {"num_inference_steps", "guidance_scale", "true_cfg_scale", "negative_prompt", "height", "width"}
    )
    multiple = 32
    cache_context = True
    first_block_cache = True

    _tokenizer: Any = None

    def configure_for(self, pipe: Any) -> None:
        # The batch's prompts are padded to the longest, and since diffusers 0.37 the padding becomes an attention
        # mask, which flash/sage kernels refuse: with those, rows batch only with prompts of equal token length
        # (no padding, no mask). The processor's tokenizer is the one the pipeline encodes with.
        if not attention_takes_mask(self.attention_backend):
            processor = getattr(pipe, "processor", None)
            self._tokenizer = getattr(processor, "tokenizer", None) or getattr(pipe, "tokenizer", None)

    def prompt_tokens(self, prompt: str) -> int | None:
        """Token count of the prompt when rows must group by it, else None. The template around the prompt is
        the same for every row of a batch (equal image sizes, so equal image tokens), so the prompt decides."""
        if self._tokenizer is None:
            return None
        return len(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def prepare(self, prompt, images, seed, settings):
        self.check_images(len(images))
        im = images[0]
        # The pipeline resizes the condition image to ~1 MP at the input's aspect ratio (multiples of 32); do it here.
        cond = area_dims(1024 * 1024, im.width / im.height, 32)
        out = ((settings.width, settings.height) if settings.width
               else area_dims(self.max_area, im.width / im.height, 32))
        return PreparedRow(prompt=prompt, images=[resize(im, cond)], seed=seed, settings=settings, out_size=out,
                           prompt_tokens=self.prompt_tokens(prompt))


class QwenEditPlusAdapter(ModelAdapter):
    model_type = "qwen-plus"
    pipeline_class = "QwenImageEditPlusPipeline"
    min_diffusers = "0.36"
    batchable = False  # diffusers raises for batch_size > 1
    max_images = 4  # "Picture 1..N"; 2509/2511 are trained on 1-3 references
    defaults = Defaults(num_inference_steps=40, guidance_scale=1.0, true_cfg_scale=4.0, negative_prompt=" ")
    supports = frozenset(
        {"num_inference_steps", "guidance_scale", "true_cfg_scale", "negative_prompt", "height", "width"}
    )
    multiple = 32
    cache_context = True
    first_block_cache = True


class Flux2Adapter(ModelAdapter):
    model_type = "flux2"
    pipeline_class = "Flux2Pipeline"
    min_diffusers = "0.36"
    batchable = False  # one reference set is shared by all prompts of a call
    max_images = 10
    defaults = Defaults(num_inference_steps=28, guidance_scale=4.0)
    supports = frozenset({"num_inference_steps", "guidance_scale", "height", "width"})
    multiple = 16
    min_side = 64  # Flux2ImageProcessor.check_image_input: "Both dimensions must be at least 64px"


class Flux2KleinAdapter(Flux2Adapter):
    model_type = "flux2-klein"
    pipeline_class = "Flux2KleinPipeline"
    min_diffusers = "0.37"
    # The step-distilled klein models (FLUX.2-klein-4B/9B) run 4 steps without CFG; the base models
    # (FLUX.2-klein-base-*) are undistilled and need ~50 steps with CFG 4 (the pipeline's own defaults).
    defaults = Defaults(num_inference_steps=4, guidance_scale=1.0)
    base_defaults = Defaults(num_inference_steps=50, guidance_scale=4.0)
    cache_context = True

    def configure_for(self, pipe: Any) -> None:
        # The pipeline's is_distilled flag (model_index.json) is what it acts on: it skips CFG only when it is set.
        config = getattr(pipe, "config", None)
        if config is not None and not getattr(config, "is_distilled", True):
            self.defaults = self.base_defaults


class Flux2KleinKVAdapter(Flux2Adapter):
    """FLUX.2-klein with the reference images' keys/values computed once and cached across steps (distilled)."""

    model_type = "flux2-klein-kv"
    pipeline_class = "Flux2KleinKVPipeline"
    min_diffusers = "0.38"
    defaults = Defaults(num_inference_steps=4)
    supports = frozenset({"num_inference_steps", "height", "width"})  # step-distilled: no guidance argument


class GlmImageAdapter(ModelAdapter):
    """GLM-Image: an autoregressive stage (GlmImageForConditionalGeneration) writes prior tokens, then a diffusion
    decoder renders them. The AR stage's generate() dominates the time; rows are not batched."""

    model_type = "glm-image"
    pipeline_class = "GlmImagePipeline"
    min_diffusers = "0.37"
    batchable = False
    max_images = 4
    defaults = Defaults(num_inference_steps=50, guidance_scale=1.5)
    supports = frozenset({"num_inference_steps", "guidance_scale", "height", "width"})
    multiple = 32  # VAE 8 x patch 2 x 2

    def prepare(self, prompt, images, seed, settings):
        row = super().prepare(prompt, images, seed, settings)
        # the output defaults to the first input's (capped) size; passed explicitly so the AR stage plans for it
        if row.out_size is None:
            row.out_size = row.images[0].size
        return row


class LongCatEditAdapter(ModelAdapter):
    model_type = "longcat"
    pipeline_class = "LongCatImageEditPipeline"
    min_diffusers = "0.37"
    batchable = False  # only prompt[0] is encoded
    defaults = Defaults(num_inference_steps=50, guidance_scale=4.5, negative_prompt="")
    # no height/width: output is ~1 MP at the input's aspect ratio
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt"})
    has_step_callback = False  # no callback_on_step_end: heartbeats/cancellation hook scheduler.step instead
    multiple = 16
    cache_context = True

    def prepare(self, prompt, images, seed, settings):
        self.check_images(len(images))
        im = images[0]
        return PreparedRow(
            prompt=prompt, images=[resize(im, area_dims(1024 * 1024, im.width / im.height, 16))],
            seed=seed, settings=settings, out_size=None,
        )


class LongCatEditTurboAdapter(LongCatEditAdapter):
    """LongCat-Image-Edit-Turbo: the distilled LongCat-Image-Edit, 8 function evaluations (8 steps, no CFG)."""

    model_type = "longcat-turbo"
    defaults = Defaults(num_inference_steps=8, guidance_scale=1.0, negative_prompt="")


# --- editing pipelines added in diffusers 0.38-0.42 ------------------------------------------------------------
# Defaults: the pipeline's __call__ signature in the pinned diffusers (0.42.1), unless a comment names another
# source (the pipeline's own EXAMPLE_DOC_STRING or docstring). gpu-workers/README.md's table repeats them.


def cover_crop(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale `im` to cover (w, h), then crop the centre: JoyImage's resize_center_crop (bilinear, ceil)."""
    if im.size == size:
        return im
    bw, bh = size
    scale = max(bh / im.height, bw / im.width)
    rw, rh = math.ceil(im.width * scale), math.ceil(im.height * scale)
    im = im.resize((rw, rh), Image.Resampling.BILINEAR)
    left, top = (rw - bw) // 2, (rh - bh) // 2
    return im.crop((left, top, left + bw, top + bh))


def joyimage_bucket(width: int, height: int) -> tuple[int, int]:
    """(w, h) of JoyImage's 1 MP bucket closest to width/height's aspect ratio (diffusers' find_best_bucket)."""
    from diffusers.pipelines.joyimage.image_processor import find_best_bucket

    bh, bw = find_best_bucket(height, width, 1024)
    return bw, bh


class JoyImageEditAdapter(ModelAdapter):
    """JoyAI-Image-Edit (jdopensource/JoyAI-Image-Edit-Diffusers): Qwen3-VL encoder, Wan VAE, one reference."""

    model_type = "joyimage-edit"
    pipeline_class = "JoyImageEditPipeline"
    min_diffusers = "0.42"
    batchable = False  # one reference image per call; no batched test in diffusers
    # __call__: num_inference_steps=40, guidance_scale=4.0 (also the EXAMPLE_DOC_STRING's values)
    defaults = Defaults(num_inference_steps=40, guidance_scale=4.0)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    multiple = 64  # every bucket side is a multiple of 64

    def prepare(self, prompt, images, seed, settings):
        # The pipeline snaps the output to one of its 1 MP buckets (image_processor.BUCKETS[1024]) by aspect ratio,
        # whatever --max-area says, and resize-centre-crops the reference to it; done here on the CPU thread.
        # A requested height/width picks the bucket of its aspect ratio.
        self.check_images(len(images))
        im = images[0]
        w, h = (settings.width, settings.height) if settings.width else im.size
        bucket = joyimage_bucket(w, h)
        return PreparedRow(prompt=prompt, images=[cover_crop(im, bucket)], seed=seed, settings=settings,
                           out_size=bucket)


class JoyImageEditPlusAdapter(ModelAdapter):
    """JoyAI-Image-Edit-Plus: several references, each at its own bucket; output at the last one's bucket."""

    model_type = "joyimage-edit-plus"
    pipeline_class = "JoyImageEditPlusPipeline"
    min_diffusers = "0.42"
    batchable = False
    max_images = 4  # the pipeline sets no limit; each reference adds ~4k tokens at 1 MP
    # __call__: num_inference_steps=30, guidance_scale=4.0
    defaults = Defaults(num_inference_steps=30, guidance_scale=4.0)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    multiple = 64

    def prepare(self, prompt, images, seed, settings):
        self.check_images(len(images))
        refs = [cover_crop(im, joyimage_bucket(*im.size)) for im in images]
        out = (settings.width, settings.height) if settings.width else None  # None: the last reference's bucket
        return PreparedRow(prompt=prompt, images=refs, seed=seed, settings=settings, out_size=out)

    def call_kwargs(self, rows):
        kw = super().call_kwargs(rows)
        kw["images"] = list(rows[0].images)  # this pipeline's argument is `images`, a list of references
        del kw["image"]
        return kw


class ChronoEditAdapter(ModelAdapter):
    """ChronoEdit-14B (nvidia/ChronoEdit-14B-Diffusers): an image-to-video model (Wan 2.1) that edits by denoising
    a short clip from the input to the edited frame; the edit is the clip's last frame."""

    model_type = "chronoedit"
    pipeline_class = "ChronoEditPipeline"
    min_diffusers = "0.39"
    batchable = False
    # __call__: num_inference_steps=50, guidance_scale=5.0; without temporal reasoning the pipeline runs 5 frames
    defaults = Defaults(num_inference_steps=50, guidance_scale=5.0)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    multiple = 16  # vae_scale_factor_spatial (8) x patch_size (2), the EXAMPLE_DOC_STRING's mod_value
    # pipeline_chronoedit.basic_clean calls ftfy.fix_text on every prompt, imported only if installed
    requires = ("ftfy",)
    # the EXAMPLE_DOC_STRING sizes the clip at max_area = 720 x 1280 at the input's aspect ratio
    native_area = 720 * 1280

    def prepare(self, prompt, images, seed, settings):
        self.check_images(len(images))
        im = images[0]
        if settings.width:
            size = (settings.width, settings.height)
        else:  # the example's rule: round(sqrt(area * ratio)) // mod * mod
            area, ratio = min(self.max_area, self.native_area), im.height / im.width
            size = (max(16, round(math.sqrt(area / ratio)) // 16 * 16),
                    max(16, round(math.sqrt(area * ratio)) // 16 * 16))
        return PreparedRow(prompt=prompt, images=[resize(im, size)], seed=seed, settings=settings, out_size=size)

    def call_kwargs(self, rows):
        kw = super().call_kwargs(rows)
        kw["enable_temporal_reasoning"] = False  # the example's setting: 5 frames, no reasoning tokens
        return kw

    def output_images(self, out):
        frames = out.frames if hasattr(out, "frames") else out[0]
        if isinstance(frames, np.ndarray):  # output_type="np": (B, F, H, W, C) floats in [0, 1]
            return frames[:, -1]  # the edit is the last frame; an array, so the Engine does not rescale it
        return [clip[-1] for clip in frames]  # lists of PIL frames


class OmniGenAdapter(ModelAdapter):
    """OmniGen v1 (Shitao/OmniGen-v1-diffusers): a Phi-3 transformer that reads the prompt and the input images
    as one sequence; the prompt names each image as <img><|image_i|></img>."""

    model_type = "omnigen"
    pipeline_class = "OmniGenPipeline"
    min_diffusers = "0.32"
    batchable = False
    max_images = 3  # the pipeline sets no limit; every image adds (side/16)^2 tokens to one sequence
    # __call__: num_inference_steps=50, guidance_scale=2.5, img_guidance_scale=1.6
    defaults = Defaults(num_inference_steps=50, guidance_scale=2.5, image_guidance_scale=1.6)
    supports = frozenset({"num_inference_steps", "guidance_scale", "height", "width"})  # no negative prompt
    multiple = 16

    @staticmethod
    def with_placeholders(prompt: str, n: int) -> str:
        """The prompt with <img><|image_i|></img> for each input image, unless it already places them."""
        if "<|image_" in prompt:
            return prompt
        return " ".join(f"<img><|image_{i + 1}|></img>" for i in range(n)) + " " + prompt

    def prepare(self, prompt, images, seed, settings):
        row = super().prepare(self.with_placeholders(prompt, len(images)), images, seed, settings)
        if row.out_size is None:  # an edit keeps the (capped) first input's size
            row.out_size = row.images[0].size
        return row

    def call_kwargs(self, rows):
        kw = super().call_kwargs(rows)
        kw["input_images"] = list(rows[0].images)
        del kw["image"]
        kw["img_guidance_scale"] = kw.pop("image_guidance_scale")
        # inputs are already capped at --max-area; the processor's own cap (longest side) must not shrink them
        kw["max_input_image_size"] = max(max(im.size) for im in rows[0].images)
        return kw


class QwenImage21Adapter(ModelAdapter):
    """Qwen-Image 2.1 (Qwen/Qwen-Image-2.1) with condition images: text-to-image and editing in one model."""

    model_type = "qwen-image-2.1"
    pipeline_class = "QwenImage21Pipeline"
    min_diffusers = "0.42"
    batchable = False  # "A list is one set of images shared by every prompt in the batch"
    max_images = 4  # the pipeline sets no limit
    # __call__: num_inference_steps=40, true_cfg_scale=1.0 ("meant to be sampled without guidance")
    defaults = Defaults(num_inference_steps=40, true_cfg_scale=1.0)
    supports = frozenset({"num_inference_steps", "true_cfg_scale", "negative_prompt", "height", "width"})
    multiple = 32
    cache_context = True

    @property
    def resolution(self) -> int:
        # output_resolution (default 1024 = sqrt of the default --max-area) sizes both the output and the
        # condition images; from --max-area here
        return max(64, int(math.sqrt(self.max_area)) // 32 * 32)

    def prepare(self, prompt, images, seed, settings):
        # the pipeline's calculate_dimensions(output_resolution^2, ratio): rounded to multiples of 32
        self.check_images(len(images))
        res = self.resolution
        refs = [resize(im, area_dims(res * res, im.width / im.height, 32)) for im in images]
        out = (settings.width, settings.height) if settings.width else None  # None: the last image's size
        return PreparedRow(prompt=prompt, images=refs, seed=seed, settings=settings, out_size=out)

    def call_kwargs(self, rows):
        kw = super().call_kwargs(rows)
        kw["output_resolution"] = self.resolution
        return kw


class ZImageOmniAdapter(ModelAdapter):
    """Z-Image Omni: Z-Image's single-stream DiT with SigLIP-2 condition images (edit and multi-reference)."""

    model_type = "z-image-omni"
    pipeline_class = "ZImageOmniPipeline"
    min_diffusers = "0.37"
    batchable = False
    max_images = 4  # the pipeline sets no limit
    # __call__: num_inference_steps=50, guidance_scale=5.0
    defaults = Defaults(num_inference_steps=50, guidance_scale=5.0)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    multiple = 16  # vae_scale_factor x 2; the pipeline crops condition images to it and caps them at 1 MP
    min_side = 64  # it checks inputs with FLUX.2's image processor: "Both dimensions must be at least 64px"
    # prepare_image_latents calls self.vae.encode(image.bfloat16()): any other VAE dtype fails ("Input type
    # (c10::BFloat16) and bias type (float) should be the same"), so the pipeline loads in bf16 (on CPU too)
    only_dtype = "bf16"


class DreamLiteAdapter(ModelAdapter):
    """DreamLite (carlofkl/DreamLite-base): a small UNet with a Qwen3-VL encoder; edits with text and image CFG."""

    model_type = "dreamlite"
    pipeline_class = "DreamLitePipeline"
    min_diffusers = "0.42"
    batchable = False  # "the pipeline currently forces batch_size = 1"
    # __call__: num_inference_steps=30, guidance_scale=3.5, image_guidance_scale=1.5
    defaults = Defaults(num_inference_steps=30, guidance_scale=3.5, image_guidance_scale=1.5)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    has_step_callback = False  # no callback_on_step_end: heartbeats hook scheduler.step (as LongCat)
    multiple = 16  # the image processor's vae_scale_factor x 2

    def prepare(self, prompt, images, seed, settings):
        # the output has the input's size (floored to the VAE's factor): capped at --max-area here
        row = super().prepare(prompt, images, seed, settings)
        if row.out_size is None:
            row.out_size = row.images[0].size
        return row


class DreamLiteMobileAdapter(DreamLiteAdapter):
    """DreamLite's step-distilled mobile variant: 4 steps, no guidance arguments."""

    model_type = "dreamlite-mobile"
    pipeline_class = "DreamLiteMobilePipeline"
    # __call__: num_inference_steps=4; guidance_scale / image_guidance_scale default to None (distilled)
    defaults = Defaults(num_inference_steps=4)
    supports = frozenset({"num_inference_steps", "height", "width"})


class BriaFiboEditAdapter(ModelAdapter):
    """Bria FIBO-Edit (briaai/Fibo-Edit-1.5-base): a JSON-prompted editor (SmolLM3 encoder, Wan 2.2 VAE)."""

    model_type = "bria-fibo-edit"
    pipeline_class = "BriaFiboEditPipeline"
    min_diffusers = "0.36"
    batchable = False  # a list of images is one set of references, not a batch
    max_images = 4  # the pipeline sets no limit; the EXAMPLE_DOC_STRING uses two
    # __call__: num_inference_steps=30, guidance_scale=5 (also the EXAMPLE_DOC_STRING's base-model call)
    defaults = Defaults(num_inference_steps=30, guidance_scale=5.0)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    # height/width must be multiples of 32 (vae_scale_factor 16 x 2: "have to be divisible by 32"); references are
    # capped at 1 MP by the pipeline (_vae_safe_dims), at --max-area here
    multiple = 32

    @staticmethod
    def json_prompt(prompt: str) -> str:
        """The pipeline refuses prompts that are not JSON with an "edit_instruction" key (is_valid_edit_json).
        FIBO's own structured prompt (from its VLM prompt-to-JSON step) is passed through; plain text becomes
        {"edit_instruction": text}, which the pipeline accepts but which carries less than the full JSON."""
        try:
            if isinstance(json.loads(prompt), dict) and "edit_instruction" in prompt:
                return prompt
        except ValueError:
            pass
        return json.dumps({"edit_instruction": prompt})

    def prepare(self, prompt, images, seed, settings):
        row = super().prepare(self.json_prompt(prompt), images, seed, settings)
        # Without height/width the pipeline snaps the output to its own ~1 MP resolution list (whatever --max-area
        # says), some of whose sizes it then warns are not multiples of 32 and resizes: the first reference's
        # capped size is passed instead (the same aspect ratio).
        if row.out_size is None:
            row.out_size = row.images[0].size
        return row


class BriaFiboEditTurboAdapter(BriaFiboEditAdapter):
    """FIBO-Edit Turbo (briaai/Fibo-Edit-1.5-turbo): distilled, 4 steps without CFG (the EXAMPLE_DOC_STRING)."""

    model_type = "bria-fibo-edit-turbo"
    defaults = Defaults(num_inference_steps=4, guidance_scale=1.0)


# Kandinsky5I2IPipeline.resolutions (width, height): the only output sizes it renders; any other height/width is
# replaced by the one of the nearest aspect ratio. Kept here so preparing inputs needs no diffusers import.
KANDINSKY5_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (1024, 1024), (640, 1408), (1408, 640), (768, 1280), (1280, 768), (896, 1152), (1152, 896),
)


class Kandinsky5I2IAdapter(ModelAdapter):
    """Kandinsky 5.0 Image Editing (kandinskylab/Kandinsky-5.0-I2I-Lite-sft-Diffusers): a 6B DiT with Qwen2.5-VL
    and CLIP text encoders (the Qwen-VL one also sees the source image) and the FLUX.1 VAE."""

    model_type = "kandinsky5-i2i"
    pipeline_class = "Kandinsky5I2IPipeline"
    min_diffusers = "0.37"
    batchable = False
    # __call__: num_inference_steps=50, guidance_scale=3.5 (the model card's example calls it with these defaults)
    defaults = Defaults(num_inference_steps=50, guidance_scale=3.5)
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt", "height", "width"})
    multiple = 64

    @staticmethod
    def bucket(width: int, height: int) -> tuple[int, int]:
        """The pipeline's rule: (width, height) if it is one of its resolutions, else the one whose aspect ratio
        is nearest (the first of equals, as np.argmin)."""
        if (width, height) in KANDINSKY5_RESOLUTIONS:
            return width, height
        ratio = width / height
        return min(KANDINSKY5_RESOLUTIONS, key=lambda r: abs(r[0] / r[1] - ratio))

    def prepare(self, prompt, images, seed, settings):
        # The output is always one of the ~1 MP resolutions, whatever --max-area says; the source image is resized
        # (not cropped: VaeImageProcessor's default) to it here, so the pipeline's own resize is a no-op.
        self.check_images(len(images))
        im = images[0]
        size = self.bucket(*((settings.width, settings.height) if settings.width else im.size))
        return PreparedRow(prompt=prompt, images=[resize(im, size)], seed=seed, settings=settings, out_size=size)

    def output_images(self, out):
        return out.image if hasattr(out, "image") else out[0]  # KandinskyImagePipelineOutput has `image`


ADAPTERS: dict[str, type[ModelAdapter]] = {
    a.model_type: a
    for a in (
        QwenEditAdapter, QwenEditPlusAdapter, FluxKontextAdapter, Flux2Adapter, Flux2KleinAdapter,
        Flux2KleinKVAdapter, LongCatEditAdapter, LongCatEditTurboAdapter, GlmImageAdapter, InstructPix2PixAdapter,
        SdxlInstructPix2PixAdapter, JoyImageEditAdapter, JoyImageEditPlusAdapter, ChronoEditAdapter, OmniGenAdapter,
        QwenImage21Adapter, ZImageOmniAdapter, DreamLiteAdapter, DreamLiteMobileAdapter, BriaFiboEditAdapter,
        BriaFiboEditTurboAdapter, Kandinsky5I2IAdapter,
    )
}

# several types share a class (longcat / longcat-turbo): the first registered is the one a model_index.json names
PIPELINE_TO_TYPE: dict[str, str] = {}
for _type, _adapter in ADAPTERS.items():
    PIPELINE_TO_TYPE.setdefault(_adapter.pipeline_class, _type)


def get_adapter(model_type: str, **kwargs: Any) -> ModelAdapter:
    try:
        return ADAPTERS[model_type](**kwargs)
    except KeyError:
        raise UnknownModelType(f"unknown model type {model_type!r}; one of {', '.join(ADAPTERS)}") from None


# --- model-type detection -------------------------------------------------------------------------------------

def _detection() -> dict[str, Any]:
    # The rules live in the wire contract, so the TypeScript side infers the same type from the same name.
    from .contract import load_schema

    return load_schema()["modelTypeDetection"]


_RULES: list[tuple[str, str]] = [(pattern, mtype) for pattern, mtype in _detection()["nameRules"]]


# a Hub repo id ("org/name"), as opposed to a local path
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _model_index_class(model: str, revision: str | None = None) -> tuple[str, str]:
    """(the _class_name in the model's model_index.json, "" if none; why there is none, "" if there is one).

    A local folder's file is read; for a Hub repo id, huggingface_hub fetches it (one small file, into the Hub
    cache the pipeline's own download then uses), or, offline (HF_HUB_OFFLINE=1), finds it in that cache."""
    if os.path.isdir(model):
        index = Path(model) / "model_index.json"
        if not index.is_file():
            return "", f"{model} has no model_index.json"
        text = index.read_text(encoding="utf-8")
    elif _REPO_ID.match(model) and not os.path.exists(model):
        try:
            from huggingface_hub import hf_hub_download

            text = Path(hf_hub_download(model, "model_index.json", revision=revision)).read_text(encoding="utf-8")
        except Exception as e:  # noqa: BLE001 - offline and not cached, no such repo, no such file, network...
            return "", f"its model_index.json could not be read from the Hub ({type(e).__name__})"
    else:
        return "", f"{model} is neither a folder nor a Hub repo id"
    try:
        return str(json.loads(text).get("_class_name", "")), ""
    except (ValueError, AttributeError):
        return "", "its model_index.json is not a JSON object"


def detect_model_type(model: str, revision: str | None = None) -> str:
    """The model type of a hub id or local directory.

    Order: name patterns (Qwen-Image-Edit-2509/2511/Plus -> qwen-plus, Qwen-Image-Edit -> qwen, *Kontext* ->
    flux-kontext, FLUX.2-klein -> flux2-klein, FLUX.2 -> flux2, LongCat -> longcat, *pix2pix* ->
    instruct-pix2pix, ...: the contract's nameRules); then the pipeline class in its model_index.json (a local
    folder's, or a Hub repo's: downloaded, or from the Hub cache when offline).
    """
    name = model.lower()
    for pattern, mtype in _RULES:
        if re.search(pattern, name):
            return mtype
    cls, why = _model_index_class(model, revision)
    by_class = _detection()["pipelineClasses"]
    if cls in by_class:
        return by_class[cls]
    if cls:
        why = f"its model_index.json names {cls}, which no model type serves"
    raise UnknownModelType(
        f"cannot tell the model type of {model!r} from its name ({why}); pass --model-type "
        f"({' | '.join(ADAPTERS)}), or --adapter for a plugin"
    )
