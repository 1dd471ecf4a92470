"""Adapters: model-type detection, defaults and overrides, params checks, CPU preparation, call kwargs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from atelier_gpu import models
from atelier_gpu.models import InvalidParams, detect_model_type, get_adapter


@pytest.mark.parametrize("name, expected", [
    ("Qwen/Qwen-Image-Edit", "qwen"),
    ("Qwen/Qwen-Image-Edit-2509", "qwen-plus"),
    ("Qwen/Qwen-Image-Edit-2511", "qwen-plus"),
    ("/models/qwen-image-edit-plus-local", "qwen-plus"),
    ("black-forest-labs/FLUX.1-Kontext-dev", "flux-kontext"),
    ("black-forest-labs/FLUX.2-dev", "flux2"),
    ("diffusers/FLUX.2-dev-bnb-4bit", "flux2"),
    ("black-forest-labs/FLUX.2-klein-4B", "flux2-klein"),
    ("black-forest-labs/FLUX.2-klein-base-9B", "flux2-klein"),
    ("meituan-longcat/LongCat-Image-Edit", "longcat"),
    ("meituan-longcat/LongCat-Image-Edit-Turbo", "longcat-turbo"),
    ("black-forest-labs/FLUX.2-klein-9B-kv", "flux2-klein-kv"),
    ("zai-org/GLM-Image", "glm-image"),
    ("timbrooks/instruct-pix2pix", "instruct-pix2pix"),
])
def test_detect_from_name(name, expected):
    assert detect_model_type(name) == expected


def test_detect_from_local_model_index(tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps({"_class_name": "LongCatImageEditPipeline"}))
    assert detect_model_type(str(d)) == "longcat"
    with pytest.raises(ValueError, match="--model-type"):
        detect_model_type(str(tmp_path / "unknown-model"))


def test_every_contract_type_has_an_adapter():
    from atelier_gpu.contract import model_types

    assert sorted(models.ADAPTERS) == sorted(model_types())


@pytest.mark.parametrize("mtype, steps, guidance, true_cfg, neg", [
    ("qwen", 50, 1.0, 4.0, " "),
    ("qwen-plus", 40, 1.0, 4.0, " "),
    ("flux-kontext", 30, 2.5, 1.0, None),
    ("flux2", 28, 4.0, None, None),
    ("flux2-klein", 4, 1.0, None, None),
    ("flux2-klein-kv", 4, None, None, None),
    ("longcat", 50, 4.5, None, ""),
    ("longcat-turbo", 8, 1.0, None, ""),
    ("glm-image", 50, 1.5, None, None),
    ("instruct-pix2pix", 50, 7.5, None, None),
])
def test_defaults(mtype, steps, guidance, true_cfg, neg):
    s = get_adapter(mtype).resolve({})
    assert (s.num_inference_steps, s.guidance_scale, s.true_cfg_scale, s.negative_prompt) == \
        (steps, guidance, true_cfg, neg)


def test_overrides_worker_then_request():
    a = get_adapter("qwen", worker_overrides={"num_inference_steps": 8, "true_cfg_scale": 1.0,
                                              "negative_prompt": None})
    s = a.resolve({})
    assert (s.num_inference_steps, s.true_cfg_scale, s.negative_prompt) == (8, 1.0, " ")
    s = a.resolve({"num_inference_steps": 4, "negative_prompt": "blurry"})
    assert (s.num_inference_steps, s.negative_prompt) == (4, "blurry")
    # a worker flag the model does not take is ignored (a request param is an error)
    f2 = get_adapter("flux2", worker_overrides={"true_cfg_scale": 4.0})
    assert f2.resolve({}).true_cfg_scale is None
    with pytest.raises(InvalidParams, match="true_cfg_scale"):
        f2.resolve({"true_cfg_scale": 4.0})
    with pytest.raises(InvalidParams, match="height"):
        get_adapter("longcat").resolve({"height": 512, "width": 512})
    with pytest.raises(InvalidParams, match="both"):
        get_adapter("qwen").resolve({"height": 512})


def test_image_counts():
    get_adapter("qwen-plus").check_images(3)
    with pytest.raises(InvalidParams):
        get_adapter("flux-kontext").check_images(2)
    with pytest.raises(InvalidParams):
        get_adapter("qwen").check_images(0)


def test_prepare_sizes_and_batch_keys():
    im = Image.new("RGB", (1600, 1200))
    k = get_adapter("flux-kontext")
    s = k.resolve({})
    row = k.prepare("p", [im], 1, s)
    assert row.images[0].size == (1184, 880) and row.out_size == (1184, 880)  # Kontext's 4:3 bucket
    kw = k.call_kwargs([row, k.prepare("q", [im], 2, s)])
    assert kw["prompt"] == ["p", "q"] and len(kw["image"]) == 2
    assert (kw["width"], kw["height"], kw["max_area"], kw["_auto_resize"]) == (1184, 880, 1184 * 880, False)
    assert kw["guidance_scale"] == 2.5 and "negative_prompt" not in kw

    q = get_adapter("qwen")
    row = q.prepare("p", [im], 1, q.resolve({}))
    assert row.images[0].size == (1184, 896)
    assert q.call_kwargs([row])["negative_prompt"] == " "

    p = get_adapter("instruct-pix2pix")
    r1 = p.prepare("a", [im], 1, p.resolve({}))
    assert r1.images[0].size[0] % 8 == 0 and r1.images[0].size[0] * r1.images[0].size[1] <= 1024 * 1024
    r2 = p.prepare("b", [im], 2, p.resolve({}))
    r3 = p.prepare("c", [im], 3, p.resolve({"num_inference_steps": 10}))
    r4 = p.prepare("d", [Image.new("RGB", (512, 512))], 4, p.resolve({}))
    assert r1.batch_key(p) == r2.batch_key(p)
    assert r1.batch_key(p) != r3.batch_key(p)  # other params
    assert r1.batch_key(p) != r4.batch_key(p)  # other size
    kw = p.call_kwargs([r1])
    assert kw["image_guidance_scale"] == 1.5 and kw["prompt"] == "a"

    plus = get_adapter("qwen-plus")
    rp = plus.prepare("p", [im, Image.new("RGB", (300, 200))], 1, plus.resolve({}))
    assert rp.batch_key(plus) is None
    kw = plus.call_kwargs([rp])
    assert isinstance(kw["image"], list) and len(kw["image"]) == 2 and kw["true_cfg_scale"] == 4.0

    lc = get_adapter("longcat")
    kw = lc.call_kwargs([lc.prepare("p", [im], 1, lc.resolve({}))])
    assert "height" not in kw and kw["negative_prompt"] == ""

    f2 = get_adapter("flux2-klein")
    kw = f2.call_kwargs([f2.prepare("p", [im], 1, f2.resolve({"height": 512, "width": 768}))])
    assert (kw["width"], kw["height"], kw["num_inference_steps"]) == (768, 512, 4)
    assert "negative_prompt" not in kw and "true_cfg_scale" not in kw


def test_missing_pipeline_class_gives_clear_error(monkeypatch):
    from atelier_gpu.loading import PipelineUnavailable, pipeline_class

    a = get_adapter("longcat")
    monkeypatch.setattr(type(a), "pipeline_class", "NoSuchPipelineInThisDiffusers")
    with pytest.raises(PipelineUnavailable, match="diffusers >="):
        pipeline_class(a)


def test_installed_diffusers_has_every_pipeline():
    from atelier_gpu.loading import pipeline_class

    for t in models.ADAPTERS:
        assert pipeline_class(get_adapter(t)) is not None


def test_contract_detection_table_matches_the_adapters():
    # The contract's class -> type table (read by the TypeScript side too) names every adapter's pipeline.
    from atelier_gpu.contract import load_schema
    from atelier_gpu.models import PIPELINE_TO_TYPE

    assert load_schema()["modelTypeDetection"]["pipelineClasses"] == PIPELINE_TO_TYPE
