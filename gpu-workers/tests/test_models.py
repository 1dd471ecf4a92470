"""Adapters: model-type detection, defaults and overrides, params checks, CPU preparation, call kwargs."""

from __future__ import annotations

import json
import re

import numpy as np
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
    # the model ids in each new pipeline's EXAMPLE_DOC_STRING
    ("jdopensource/JoyAI-Image-Edit-Diffusers", "joyimage-edit"),
    ("jdopensource/JoyAI-Image-Edit-Plus-Diffusers", "joyimage-edit-plus"),
    ("nvidia/ChronoEdit-14B-Diffusers", "chronoedit"),
    ("Shitao/OmniGen-v1-diffusers", "omnigen"),
    ("Qwen/Qwen-Image-2.1", "qwen-image-2.1"),
    ("/models/z-image-omni-base", "z-image-omni"),
    ("carlofkl/DreamLite-base", "dreamlite"),
    ("carlofkl/DreamLite-mobile", "dreamlite-mobile"),
    ("briaai/Fibo-Edit-1.5-base", "bria-fibo-edit"),
    ("briaai/Fibo-Edit-1.5-turbo", "bria-fibo-edit-turbo"),
    # SDXL InstructPix2Pix is not the SD 1.5 pipeline, whose "pix2pix" rule comes after it
    ("diffusers/sdxl-instructpix2pix-768", "sdxl-instruct-pix2pix"),
    ("kandinskylab/Kandinsky-5.0-I2I-Lite-sft-Diffusers", "kandinsky5-i2i"),
])
def test_detect_from_name(name, expected):
    assert detect_model_type(name) == expected


def test_detect_from_local_model_index(tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps({"_class_name": "LongCatImageEditPipeline"}))
    assert detect_model_type(str(d)) == "longcat"
    # every diffusers adapter's pipeline class is detected from a folder whose name says nothing
    for cls, mtype in models.PIPELINE_TO_TYPE.items():
        (d / "model_index.json").write_text(json.dumps({"_class_name": cls}))
        assert detect_model_type(str(d)) == mtype, cls
    (d / "model_index.json").write_text(json.dumps({"_class_name": "Cosmos3OmniPipeline"}))
    with pytest.raises(ValueError, match="--model-type"):
        detect_model_type(str(d))
    with pytest.raises(ValueError, match="--model-type"):
        detect_model_type(str(tmp_path / "unknown-model"))


def _hub_cache(root, repo_id: str, index: dict | None) -> str:
    """A Hugging Face Hub cache holding `repo_id` at main (the layout huggingface_hub writes: refs/main names the
    snapshot), with a model_index.json when `index` is given."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    if index is not None:
        (snapshot / "model_index.json").write_text(json.dumps(index))
    return str(root)


def test_detect_a_hub_repo_id_from_its_model_index(tmp_path):
    """--model org/name is enough when the name says nothing: the repo's model_index.json, fetched by the real
    huggingface_hub (here offline, from a Hub cache, as the worker finds a repo downloaded earlier)."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hub"
    _hub_cache(cache, "acme/house-style-v3", {"_class_name": "JoyImageEditPipeline"})
    _hub_cache(cache, "acme/sd-finetune", {"_class_name": "StableDiffusionPipeline"})
    code = ("import sys\nfrom atelier_gpu.models import detect_model_type\n"
            "for m in sys.argv[1:]:\n"
            "    try:\n        print(detect_model_type(m))\n"
            "    except ValueError as e:\n        print(e)\n")
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code, "acme/house-style-v3", "acme/sd-finetune", "acme/not-cached"],
                         capture_output=True, text=True, env=env, check=True, timeout=120).stdout.splitlines()
    assert out[0] == "joyimage-edit"
    assert "names StableDiffusionPipeline, which no model type serves" in out[1] and "--model-type" in out[1]
    assert "could not be read from the Hub" in out[2] and "--model-type" in out[2]


def test_every_contract_type_has_an_adapter():
    from atelier_gpu.contract import model_types

    # plugin: served by a plugin adapter (--adapter), not by a diffusers pipeline class
    assert sorted([*models.ADAPTERS, "plugin"]) == sorted(model_types())


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
    ("joyimage-edit", 40, 4.0, None, None),
    ("joyimage-edit-plus", 30, 4.0, None, None),
    ("chronoedit", 50, 5.0, None, None),
    ("omnigen", 50, 2.5, None, None),
    ("qwen-image-2.1", 40, None, 1.0, None),
    ("z-image-omni", 50, 5.0, None, None),
    ("dreamlite", 30, 3.5, None, None),
    ("dreamlite-mobile", 4, None, None, None),
    ("bria-fibo-edit", 30, 5.0, None, None),
    ("bria-fibo-edit-turbo", 4, 1.0, None, None),
    ("sdxl-instruct-pix2pix", 30, 3.0, None, None),
    ("kandinsky5-i2i", 50, 3.5, None, None),
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


def test_defaults_are_the_pipeline_signatures():
    """Where an adapter's comment says its defaults are the pipeline's __call__ defaults, they are (in the pinned
    diffusers): a diffusers upgrade that changes one shows up here."""
    import inspect

    from atelier_gpu.loading import pipeline_class

    names = {"num_inference_steps": "num_inference_steps", "guidance_scale": "guidance_scale",
             "true_cfg_scale": "true_cfg_scale", "image_guidance_scale": "image_guidance_scale"}
    from_signature = ["joyimage-edit", "joyimage-edit-plus", "chronoedit", "qwen-image-2.1", "z-image-omni",
                      "dreamlite", "dreamlite-mobile", "bria-fibo-edit", "omnigen", "kandinsky5-i2i"]
    for mtype in from_signature:
        adapter = get_adapter(mtype)
        params = inspect.signature(pipeline_class(adapter).__call__).parameters
        for field, value in adapter.defaults.__dict__.items():
            if value is None or field == "negative_prompt":
                continue
            name = "img_guidance_scale" if (mtype, field) == ("omnigen", "image_guidance_scale") else names[field]
            assert params[name].default == value, f"{mtype}: {name} defaults to {params[name].default}, not {value}"


def test_new_adapters_prepare_and_call_kwargs():
    im, im2 = Image.new("RGB", (1600, 1200)), Image.new("RGB", (600, 900))

    joy = get_adapter("joyimage-edit")
    row = joy.prepare("p", [im], 1, joy.resolve({}))
    assert row.images[0].size == row.out_size == (1152, 832)  # diffusers' find_best_bucket for 4:3 at 1 MP
    kw = joy.call_kwargs([row])
    assert (kw["width"], kw["height"], kw["guidance_scale"]) == (1152, 832, 4.0) and kw["image"] is row.images[0]

    plus = get_adapter("joyimage-edit-plus")
    kw = plus.call_kwargs([plus.prepare("p", [im, im2], 1, plus.resolve({}))])
    assert "image" not in kw and [i.size for i in kw["images"]] == [(1152, 832), (832, 1216)]
    assert "height" not in kw  # the pipeline sizes the output from the last reference

    chrono = get_adapter("chronoedit")
    row = chrono.prepare("p", [im], 1, chrono.resolve({}))
    assert row.out_size == row.images[0].size == (1104, 816)  # 720x1280 area at 4:3, floored to multiples of 16
    kw = chrono.call_kwargs([row])
    assert kw["enable_temporal_reasoning"] is False and (kw["width"], kw["height"]) == (1104, 816)
    frames = np.zeros((2, 5, 8, 8, 3), dtype=np.float32)
    frames[:, -1] = 1.0
    assert [f.max() for f in chrono.output_images(type("Out", (), {"frames": frames})())] == [1.0, 1.0]

    omni = get_adapter("omnigen")
    row = omni.prepare("make it red", [im, im2], 1, omni.resolve({}))
    kw = omni.call_kwargs([row])
    assert kw["prompt"] == "<img><|image_1|></img> <img><|image_2|></img> make it red"
    assert len(kw["input_images"]) == 2 and "image" not in kw and kw["img_guidance_scale"] == 1.6
    assert (kw["width"], kw["height"]) == row.images[0].size
    placed = omni.prepare("put <img><|image_1|></img> here", [im], 1, omni.resolve({}))
    assert placed.prompt == "put <img><|image_1|></img> here"

    q21 = get_adapter("qwen-image-2.1", max_area=512 * 512)
    kw = q21.call_kwargs([q21.prepare("p", [im], 1, q21.resolve({}))])
    assert kw["output_resolution"] == 512 and kw["image"][0].size == (576, 448) and kw["true_cfg_scale"] == 1.0

    fibo = get_adapter("bria-fibo-edit")
    kw = fibo.call_kwargs([fibo.prepare("make it red", [im], 1, fibo.resolve({}))])
    assert json.loads(kw["prompt"]) == {"edit_instruction": "make it red"}
    structured = json.dumps({"edit_instruction": "x", "style": "photo"})
    assert fibo.prepare(structured, [im], 1, fibo.resolve({})).prompt == structured

    lite = get_adapter("dreamlite-mobile")
    kw = lite.call_kwargs([lite.prepare("p", [im], 1, lite.resolve({}))])
    assert kw["num_inference_steps"] == 4 and "guidance_scale" not in kw and kw["width"] % 16 == 0


def test_example_defaults_are_the_pipeline_examples():
    """Where an adapter's defaults are its pipeline's EXAMPLE_DOC_STRING call (not __call__'s defaults), they are
    the values that example passes, in the pinned diffusers."""
    import sys

    from atelier_gpu.loading import pipeline_class

    for mtype, fields in [("sdxl-instruct-pix2pix", ("num_inference_steps", "guidance_scale", "image_guidance_scale")),
                          ("bria-fibo-edit-turbo", ("num_inference_steps", "guidance_scale"))]:
        adapter = get_adapter(mtype)
        example = sys.modules[pipeline_class(adapter).__module__].EXAMPLE_DOC_STRING
        if mtype == "bria-fibo-edit-turbo":
            example = example[example.lower().index("turbo"):]  # the docstring's turbo call
        for field in fields:
            value = getattr(adapter.defaults, field)
            found = re.findall(rf"{field}=([0-9.]+)", example)
            assert found and float(found[0]) == value, f"{mtype}: the example passes {field}={found}, not {value}"


def test_sdxl_pix2pix_and_kandinsky5_prepare():
    im = Image.new("RGB", (1600, 1200))
    sx = get_adapter("sdxl-instruct-pix2pix", max_area=768 * 768)
    row = sx.prepare("p", [im], 1, sx.resolve({}))
    # the input's aspect ratio, capped at --max-area, passed as the output size (else the pipeline squares it)
    assert row.images[0].size == row.out_size == (880, 664)
    kw = sx.call_kwargs([row, sx.prepare("q", [im], 2, sx.resolve({}))])
    assert kw["prompt"] == ["p", "q"] and (kw["width"], kw["height"]) == (880, 664)
    assert (kw["guidance_scale"], kw["image_guidance_scale"], kw["num_inference_steps"]) == (3.0, 1.5, 30)
    assert row.batch_key(sx) is not None

    k5 = get_adapter("kandinsky5-i2i", max_area=64 * 64)  # --max-area does not apply: ~1 MP resolutions only
    row = k5.prepare("p", [im], 1, k5.resolve({}))
    assert row.images[0].size == row.out_size == (1152, 896)  # 4:3 -> the nearest of its resolutions
    assert k5.prepare("p", [Image.new("RGB", (300, 700))], 1, k5.resolve({})).out_size == (640, 1408)
    assert k5.prepare("p", [im], 1, k5.resolve({"width": 1280, "height": 768})).out_size == (1280, 768)
    kw = k5.call_kwargs([row])
    assert (kw["width"], kw["height"], kw["guidance_scale"]) == (1152, 896, 3.5) and kw["image"] is row.images[0]
    out = type("Out", (), {"image": [Image.new("RGB", (8, 8))]})()
    assert len(k5.output_images(out)) == 1


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
