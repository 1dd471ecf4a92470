"""Plugin adapters: serve a model from its own repository's code (Step1X-Edit, BAGEL, ...) without forking the
worker.

A plugin is a class with the attributes and methods of ``EditPlugin`` (subclassing it is the easy way), named on
the worker's command line as ``--adapter package.module:ClassName``, or by the name of an entry point in the group
``atelier_gpu.adapters`` that a package declares (``[project.entry-points."atelier_gpu.adapters"]``). On the wire
such a worker serves the contract's model type ``plugin``; everything else is the worker's as for diffusers models:
task queue, micro-batching (up to the plugin's ``max_batch``), heartbeats on every step, cancellation, presigned
URLs, PNG writing, one process per GPU and the contract's error classes (an exception other than CUDA OOM from
``edit`` fails the row as InvalidRequest when it is a ValueError, else is retried by Temporal).

Interface version 1 (``PLUGIN_API_VERSION``; a plugin states the version it implements in ``api_version``):

- ``load(model, device, dtype)``: called once per process before the warm-up and the first row (``edit`` then
  runs on the worker's single GPU thread, never two calls at once). ``model`` is the worker's ``--model`` (a hub
  id or folder; the plugin resolves it), ``device`` a torch device string (``cuda`` in a per-GPU child, whose
  CUDA_VISIBLE_DEVICES holds one GPU; ``cpu`` with ``--gpus cpu``), ``dtype`` a torch dtype (bf16 on CUDA, fp32
  on CPU unless ``--dtype``).
- ``edit(requests, step)``: one call per batch (``len(requests) <= max_batch``; rows of a batch have equal settings
  and equal input sizes). Returns one image per request, in order: a PIL image or an HxWx3 array (uint8, or float
  in [0, 1]). ``step(i)`` must be called after denoising step ``i`` (1-based): it heartbeats the rows and raises
  when every row of the batch was cancelled; let that exception propagate.
- Attributes: ``name``; ``defaults`` (generation defaults, keys of ``EditRequest``'s settings); ``supports`` (the
  request params a row may override: contract GenerationParams keys); ``max_images``; ``max_batch``; ``multiple``
  (input sides are resized to multiples of it, capped at ``--max-area``).

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, ClassVar

import numpy as np
from PIL import Image

from .models import Defaults, ModelAdapter, PreparedRow

PLUGIN_API_VERSION = 1
SUPPORTED_API_VERSIONS = frozenset({1})
ENTRY_POINT_GROUP = "atelier_gpu.adapters"
PLUGIN_MODEL_TYPE = "plugin"  # the contract's model type of every plugin-served model

# the contract's GenerationParams keys a plugin may let rows override
_PARAMS = frozenset({"num_inference_steps", "guidance_scale", "true_cfg_scale", "negative_prompt", "height", "width"})


class PluginError(ValueError):
    """An --adapter spec that cannot be resolved or a class that does not implement the plugin interface."""


@dataclass(frozen=True)
class EditRequest:
    """One row, as a plugin's ``edit`` receives it (interface version 1)."""

    prompt: str
    images: list[Image.Image]  # RGB, capped at --max-area, sides multiples of the plugin's `multiple`
    seed: int
    num_inference_steps: int
    guidance_scale: float | None
    true_cfg_scale: float | None
    negative_prompt: str | None
    width: int | None  # the requested output size; None: the plugin decides (usually the first input's size)
    height: int | None
    image_guidance_scale: float | None = None  # from the plugin's defaults (rows cannot set it: not a contract param)


class EditPlugin:
    """Base class of plugin adapters (interface version 1). Subclasses set the attributes and implement both
    methods; see the module docstring and gpu-workers/README.md ("Plugin adapters")."""

    api_version: ClassVar[int] = PLUGIN_API_VERSION
    name: ClassVar[str] = "plugin"
    defaults: ClassVar[dict[str, Any]] = {"num_inference_steps": 28}
    supports: ClassVar[frozenset[str]] = frozenset({"num_inference_steps"})
    max_images: ClassVar[int] = 1
    max_batch: ClassVar[int] = 1
    multiple: ClassVar[int] = 16

    def load(self, model: str, device: str, dtype: Any) -> None:
        raise NotImplementedError

    def edit(self, requests: list[EditRequest], step: Callable[[int], None]) -> list[Any]:
        raise NotImplementedError


def resolve_plugin_class(spec: str) -> type:
    """The class named by ``module:Class`` or by an entry point of the group atelier_gpu.adapters."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise PluginError(f"--adapter {spec}: cannot import module {module_name!r}: {e}") from e
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise PluginError(f"--adapter {spec}: module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
    else:
        found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            names = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
            raise PluginError(f"--adapter {spec}: no entry point {spec!r} in group {ENTRY_POINT_GROUP} "
                              f"(installed: {', '.join(names) or 'none'}); or pass module:Class")
        try:
            obj = found[0].load()
        except Exception as e:  # noqa: BLE001 - an entry point's import can fail in any way
            raise PluginError(f"--adapter {spec}: entry point {found[0].value} failed to load: {e}") from e
    if not inspect.isclass(obj):
        raise PluginError(f"--adapter {spec}: {obj!r} is not a class")
    check_plugin_class(obj, spec)
    return obj


def check_plugin_class(cls: type, spec: str = "") -> None:
    """Refuse, naming what is wrong, a class that does not implement interface version 1."""
    where = f"--adapter {spec or cls.__name__}"
    version = getattr(cls, "api_version", None)
    if version not in SUPPORTED_API_VERSIONS:
        raise PluginError(f"{where}: api_version {version!r} is not supported by this worker "
                          f"(supported: {', '.join(map(str, sorted(SUPPORTED_API_VERSIONS)))})")
    for method in ("load", "edit"):
        fn = getattr(cls, method, None)
        if not callable(fn) or fn is getattr(EditPlugin, method):
            raise PluginError(f"{where}: {cls.__name__} does not implement {method}()")
    supports = frozenset(getattr(cls, "supports", ()))
    unknown = sorted(supports - _PARAMS)
    if unknown:
        raise PluginError(f"{where}: supports names {', '.join(unknown)}, which are not contract params "
                          f"({', '.join(sorted(_PARAMS))})")
    if "num_inference_steps" not in dict(getattr(cls, "defaults", {})):
        raise PluginError(f"{where}: defaults must give num_inference_steps")
    bad_defaults = sorted(set(dict(cls.defaults)) - set(Defaults.__dataclass_fields__))
    if bad_defaults:
        raise PluginError(f"{where}: defaults has unknown keys {', '.join(bad_defaults)}")
    for attr in ("max_images", "max_batch", "multiple"):
        value = getattr(cls, attr, None)
        if not isinstance(value, int) or value < 1:
            raise PluginError(f"{where}: {attr} must be a positive integer, got {value!r}")


class PluginAdapter(ModelAdapter):
    """The ModelAdapter of a plugin: the worker's CPU-side preparation and batching, with the plugin's limits."""

    model_type = PLUGIN_MODEL_TYPE
    min_diffusers = "0"

    def __init__(self, plugin: Any, **kwargs: Any):
        self.plugin = plugin
        cls = type(plugin)
        self.pipeline_class = f"{cls.__module__}:{cls.__qualname__}"
        self.defaults = Defaults(**dict(plugin.defaults))
        self.supports = frozenset(plugin.supports)
        self.max_images = int(plugin.max_images)
        self.batchable = int(plugin.max_batch) > 1
        self.multiple = int(plugin.multiple)
        super().__init__(**kwargs)

    def call_kwargs(self, rows: list[PreparedRow]) -> dict[str, Any]:
        requests = []
        for r in rows:
            s = r.settings
            width, height = r.out_size if r.out_size is not None else (None, None)
            requests.append(EditRequest(
                prompt=r.prompt, images=list(r.images), seed=int(r.seed), num_inference_steps=s.num_inference_steps,
                guidance_scale=s.guidance_scale, true_cfg_scale=s.true_cfg_scale, negative_prompt=s.negative_prompt,
                width=width, height=height, image_guidance_scale=s.image_guidance_scale))
        return {"requests": requests}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["plugin"] = {"name": self.plugin.name, "class": self.pipeline_class,
                          "api_version": self.plugin.api_version, "max_batch": int(self.plugin.max_batch)}
        return info


@dataclass
class PluginOutput:
    images: list[Image.Image]


def _to_pil(out: Any, index: int) -> Image.Image:
    if isinstance(out, Image.Image):
        return out.convert("RGB")
    arr = np.asarray(out)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise RuntimeError(f"plugin output {index} has shape {arr.shape}; expected a PIL image or HxWx3 array")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


class PluginPipeline:
    """Makes a loaded plugin callable the way the Engine calls a diffusers pipeline (requests from
    PluginAdapter.call_kwargs, the step callback, the generators it ignores in favour of each row's seed)."""

    def __init__(self, plugin: Any):
        self.plugin = plugin
        self._interrupt = False  # the Engine sets it on cancellation, as on diffusers pipelines

    def __call__(self, requests: list[EditRequest], generator: Any = None, output_type: str = "pil",
                 callback_on_step_end: Callable[..., Any] | None = None,
                 callback_on_step_end_tensor_inputs: list[str] | None = None) -> PluginOutput:
        self._interrupt = False

        def step(i: int) -> None:
            if callback_on_step_end is not None:
                callback_on_step_end(self, int(i) - 1, None, {})

        outs = self.plugin.edit(list(requests), step)
        if outs is None or len(outs) != len(requests):
            got = "None" if outs is None else str(len(outs))
            raise RuntimeError(f"plugin {self.plugin.name} returned {got} images for {len(requests)} requests")
        return PluginOutput(images=[_to_pil(o, i) for i, o in enumerate(outs)])


def load_plugin(spec: str, model: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, PluginPipeline]:
    """Resolve ``spec``, instantiate the plugin and load ``model`` with it. Returns (plugin, pipeline)."""
    from .loading import resolve_device, resolve_dtype

    cls = resolve_plugin_class(spec)
    plugin = cls()
    dev = resolve_device(device)
    plugin.load(model, dev, resolve_dtype(dtype, dev))
    return plugin, PluginPipeline(plugin)


__all__ = ["PLUGIN_API_VERSION", "ENTRY_POINT_GROUP", "EditPlugin", "EditRequest", "PluginAdapter", "PluginError",
           "PluginPipeline", "load_plugin", "resolve_plugin_class"]
