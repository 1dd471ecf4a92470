"""Heartbeat step counts are denoising steps, not transformer passes.

LongCat-Image-Edit has no callback_on_step_end, so the engine tracks its steps another way; with CFG the
pipeline calls the transformer twice per step (cond, uncond). FLUX.1 Kontext with true CFG does the same, so the
tiny Kontext pipeline, served through an adapter that (like LongCat's) declares no step callback, stands for it.
"""

from __future__ import annotations

from temporalio.testing import ActivityEnvironment

from conftest import TEST_AREA, load_tiny, request


def test_steps_reported_without_step_callback_are_denoising_steps(tiny_models, images, tmp_path):
    from atelier_gpu import models

    class KontextWithoutCallback(models.FluxKontextAdapter):
        has_step_callback = False  # as LongCatEditAdapter

    from atelier_gpu.activity import EditService
    from atelier_gpu.engine import Engine

    engine = Engine(load_tiny(tiny_models, "flux-kontext"), KontextWithoutCallback(max_area=TEST_AREA)).start()
    svc = EditService(engine, tiny_models["flux-kontext"], heartbeat_interval_s=0.05, poll_s=0.02)
    env = ActivityEnvironment()
    steps: list[tuple[int, int]] = []
    env.on_heartbeat = lambda *d: steps.append((d[0]["step"], d[0]["steps"])) if d and d[0].get("stage") == "denoise" \
        else None
    env.run(svc.edit_image_gpu, request(
        tiny_models["flux-kontext"], "flux-kontext", [images["red"]], str(tmp_path / "o.png"),
        params={"num_inference_steps": 3, "true_cfg_scale": 2.0, "negative_prompt": "blurry"}))
    engine.batcher.shutdown(wait=True, timeout=10)
    assert steps, "no denoise heartbeat"
    assert max(s for s, _ in steps) == 3 and all(total == 3 for _, total in steps), steps
