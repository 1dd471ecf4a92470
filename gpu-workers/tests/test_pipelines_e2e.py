"""Tiny random-weight pipelines end to end through the activity (ActivityEnvironment, CPU): InstructPix2Pix,
FLUX Kontext, FLUX.2-dev, FLUX.2-klein (plain and KV), Qwen-Image-Edit (plain and Plus) and LongCat-Image-Edit,
loaded from save_pretrained folders by the production loading function."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from temporalio.testing import ActivityEnvironment

from atelier_gpu import contract
from conftest import request


def _run(svc, payload, heartbeats=None):
    env = ActivityEnvironment()
    if heartbeats is not None:
        env.on_heartbeat = lambda *d: heartbeats.append(d[0] if d else None)
    return env.run(svc.edit_image_gpu, payload)


@pytest.mark.parametrize("model_type", ["instruct-pix2pix", "flux-kontext", "flux2", "flux2-klein", "flux2-klein-kv",
                                        "qwen", "qwen-plus", "longcat"])
def test_end_to_end_single_row(make_service, tiny_models, images, tmp_path, model_type):
    svc = make_service(model_type)
    out = tmp_path / "out" / "000007.png"
    beats: list = []
    res = _run(svc, request(tiny_models[model_type], model_type, [images["red"]], str(out), row_index=7,
                            seed=99, params={"num_inference_steps": 4}), beats)
    contract.validate_result(res)
    assert res["output_path"] == str(out) and res["seed"] == 99 and res["num_inference_steps"] == 4
    assert res["batch_size"] == 1 and res["worker"] == "test-worker" and res["latency_ms"] > 0
    assert res["attempt"] == 1  # the activity attempt, recorded in the ledger by the TypeScript side
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG" and im.size == (res["width"], res["height"])
        assert np.asarray(im).std() > 0  # random weights still draw something
    assert [p.name for p in out.parent.iterdir()] == ["000007.png"]  # no temp file left behind
    # heartbeats: from the step callback (every step), plus stage heartbeats around it
    steps = [b["step"] for b in beats if b and b.get("stage") == "denoise"]
    assert steps and steps[-1] == 4 and set(steps) <= {1, 2, 3, 4}
    stages = {b["stage"] for b in beats if b}
    assert {"denoise", "encode"} <= stages


# the editing pipelines added in diffusers 0.38-0.42, with as many inputs as the test gives them (multi-reference
# types get two); 2 steps each: JoyImage always runs at its 1 MP buckets, the slowest of them on a CPU
NEW_PIPELINES = [("joyimage-edit", 1), ("joyimage-edit-plus", 2), ("chronoedit", 1), ("omnigen", 2),
                 ("qwen-image-2.1", 2), ("z-image-omni", 2), ("dreamlite", 1), ("dreamlite-mobile", 1),
                 ("bria-fibo-edit", 2), ("sdxl-instruct-pix2pix", 1), ("kandinsky5-i2i", 1)]


@pytest.mark.parametrize("model_type, n_images", NEW_PIPELINES)
def test_new_pipelines_end_to_end(make_service, tiny_models, images, tmp_path, model_type, n_images):
    import importlib.util
    import time

    from atelier_gpu.models import get_adapter

    missing = [m for m in get_adapter(model_type).requires if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{model_type} needs {', '.join(missing)}, which gpu-workers/requirements.txt does not pin")
    svc = make_service(model_type)
    out = tmp_path / "out" / "000001.png"
    beats: list = []
    inputs = [images["red"], images["square"]][:n_images]
    t0 = time.perf_counter()
    res = _run(svc, request(tiny_models[model_type], model_type, inputs, str(out), row_index=1, seed=5,
                            params={"num_inference_steps": 2}), beats)
    print(f"{model_type}: {time.perf_counter() - t0:.2f}s end to end (2 steps, {n_images} input(s), "
          f"{res['width']}x{res['height']})")
    contract.validate_result(res)
    assert res["num_inference_steps"] == 2 and res["seed"] == 5 and res["batch_size"] == 1
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (res["width"], res["height"])
        # random weights still draw something; a [0, 1] output taken for 0-255 would be black (ChronoEdit's frames)
        assert np.asarray(im).std() > 1.0
    steps = [b["step"] for b in beats if b and b.get("stage") == "denoise"]
    # steps are reported (never past 2: CFG passes are not steps); the heartbeat thread sends the latest details,
    # so a fast last step may be folded into the "encode" heartbeat that follows it
    assert steps and set(steps) <= {1, 2}
    # detection from model_index.json alone (the folder name says nothing)
    from atelier_gpu.models import detect_model_type

    assert detect_model_type(tiny_models[model_type]) == model_type


def test_chronoedit_without_ftfy_is_refused_at_load(tiny_models, monkeypatch):
    import importlib.util
    import sys

    from atelier_gpu.loading import LoadOptions, PipelineUnavailable, load_pipeline
    from atelier_gpu.models import get_adapter

    # The test venv has ftfy (ChronoEdit's end-to-end test needs it), so hide it the way Python's
    # import system hides a blocked module: a None entry in sys.modules makes find_spec say "absent".
    monkeypatch.setitem(sys.modules, "ftfy", None)
    assert importlib.util.find_spec("ftfy") is None
    with pytest.raises(PipelineUnavailable, match="needs the Python package\\(s\\) ftfy"):
        load_pipeline("/nonexistent/chronoedit", get_adapter("chronoedit"), LoadOptions(device="cpu"))


@pytest.mark.parametrize("model_type, base", [("bria-fibo-edit-turbo", "bria-fibo-edit"),
                                              ("longcat-turbo", "longcat")])
def test_turbo_types_end_to_end(make_service, tiny_models, images, tmp_path, model_type, base):
    """The distilled types share their base's pipeline class (so a folder's model_index.json names the base type:
    --model-type picks them); served with no params, a row runs the turbo defaults."""
    from atelier_gpu.models import detect_model_type, get_adapter

    assert detect_model_type(tiny_models[model_type]) == base
    svc = make_service(model_type)
    out = tmp_path / "turbo.png"
    res = _run(svc, request(tiny_models[model_type], model_type, [images["red"]], str(out), params={}))
    contract.validate_result(res)
    assert res["num_inference_steps"] == get_adapter(model_type).defaults.num_inference_steps
    with Image.open(out) as im:
        assert np.asarray(im).std() > 0


@pytest.mark.parametrize("model_type", ["instruct-pix2pix", "flux-kontext", "sdxl-instruct-pix2pix"])
def test_same_seed_same_output_and_batch_matches_single(make_service, tiny_models, images, tmp_path, model_type,
                                                        decode_barrier):
    """Concurrent compatible rows share one pipeline call; each row keeps its own generator, so a row's
    output does not depend on what it was batched with."""
    model = tiny_models[model_type]
    single = make_service(model_type, batch_size=1)
    ref = {}
    for i, name in enumerate(["red", "green", "blue"]):
        r = _run(single, request(model, model_type, [images[name]], str(tmp_path / f"s{i}.png"), seed=10 + i,
                                 prompt=f"prompt {name}"))
        assert r["batch_size"] == 1
        ref[i] = np.asarray(Image.open(tmp_path / f"s{i}.png"), dtype=np.int16)
    again = _run(single, request(model, model_type, [images["red"]], str(tmp_path / "again.png"), seed=10,
                                 prompt="prompt red"))
    assert again["batch_size"] == 1
    assert np.abs(np.asarray(Image.open(tmp_path / "again.png"), dtype=np.int16) - ref[0]).max() <= 1

    batched = make_service(model_type, batch_size=4, max_wait_s=2.0)
    decode_barrier(3)
    results: dict[int, dict] = {}
    errors: list = []

    def worker(i, name):
        try:
            results[i] = _run(batched, request(model, model_type, [images[name]], str(tmp_path / f"b{i}.png"),
                                               seed=10 + i, prompt=f"prompt {name}"))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(["red", "green", "blue"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sorted(r["batch_size"] for r in results.values()) == [3, 3, 3]
    assert batched.engine.stats.batches == 1
    for i in range(3):
        got = np.asarray(Image.open(tmp_path / f"b{i}.png"), dtype=np.int16)
        assert np.abs(got - ref[i]).max() <= 2, f"row {i} differs when batched"


def test_incompatible_rows_are_not_batched(make_service, tiny_models, images, tmp_path, decode_barrier):
    decode_barrier(4)
    model = tiny_models["instruct-pix2pix"]
    svc = make_service("instruct-pix2pix", batch_size=4, max_wait_s=1.0)
    results = {}

    def worker(i, name, steps):
        results[i] = _run(svc, request(model, "instruct-pix2pix", [images[name]], str(tmp_path / f"{i}.png"),
                                       params={"num_inference_steps": steps}))

    threads = [threading.Thread(target=worker, args=a) for a in [(0, "red", 3), (1, "green", 3), (2, "square", 3),
                                                                 (3, "blue", 2)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 4
    assert results[0]["batch_size"] == results[1]["batch_size"] == 2  # same size and params
    assert results[2]["batch_size"] == 1  # other image size
    assert results[3]["batch_size"] == 1  # other params
    assert sorted(svc.engine.stats.batch_sizes) == [1, 1, 2]


def test_explicit_output_size(make_service, tiny_models, images, tmp_path):
    svc = make_service("flux-kontext")
    res = _run(svc, request(tiny_models["flux-kontext"], "flux-kontext", [images["red"]], str(tmp_path / "o.png"),
                            params={"num_inference_steps": 2, "width": 48, "height": 32}))
    assert (res["width"], res["height"]) == (48, 32)


def test_klein_base_checkpoint_gets_base_defaults_after_loading(tiny_models):
    """is_distilled survives save_pretrained / from_pretrained, and the worker's defaults follow it."""
    from atelier_gpu.engine import Engine
    from atelier_gpu.loading import LoadOptions, load_pipeline
    from atelier_gpu.models import detect_model_type, get_adapter

    for name, steps, guidance in (("flux2-klein-base", 50, 4.0), ("flux2-klein", 4, 1.0)):
        model = tiny_models[name]
        adapter = get_adapter(detect_model_type(model))
        engine = Engine(load_pipeline(model, adapter, LoadOptions(device="cpu")), adapter)
        settings = engine.adapter.resolve({})
        assert (settings.num_inference_steps, settings.guidance_scale) == (steps, guidance), name
