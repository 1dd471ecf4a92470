"""Atelier GPU workers: diffusers image-editing pipelines served as the Temporal activity editImageGpu.

Modules: contract (the JSON Schema wire contract), models (adapters, defaults, model-type detection),
loading (the one pipeline loading function), batcher (micro-batcher), engine (GPU thread, OOM fallback,
step callbacks), activity (the activity), worker (CLI entry point), tiny (tiny random-weight pipelines for
tests and the CPU benchmark).
"""

__version__ = "0.1.0"
