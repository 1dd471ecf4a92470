"""The wire contract: schema loading, request/result validation, task-queue rule, InvalidRequest errors."""

from __future__ import annotations

import copy

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from atelier_gpu import contract
from conftest import request

GOOD = {
    "run_id": "r1", "row_index": 0, "model": "timbrooks/instruct-pix2pix", "model_type": "instruct-pix2pix",
    "prompt": "make it snow", "input_images": ["/data/in/0.png"], "output_path": "/data/out/000000.png",
    "seed": 42, "params": {"num_inference_steps": 20, "guidance_scale": 7.0},
}


def test_schema_loads_and_names():
    assert contract.activity_name() == "editImageGpu"
    assert contract.model_types() == ["qwen", "qwen-plus", "flux-kontext", "flux2", "flux2-klein", "flux2-klein-kv",
                                      "longcat", "longcat-turbo", "glm-image", "instruct-pix2pix",
                                      "sdxl-instruct-pix2pix", "joyimage-edit", "joyimage-edit-plus", "chronoedit",
                                      "omnigen", "qwen-image-2.1", "z-image-omni", "dreamlite", "dreamlite-mobile",
                                      "bria-fibo-edit", "bria-fibo-edit-turbo", "kandinsky5-i2i", "plugin"]
    assert {"GpuOutOfMemory", "InputError", "InvalidRequest", "Cancelled"} <= set(contract.error_types())


def test_task_queue_rule_matches_schema_examples():
    examples = contract.load_schema()["taskQueue"]["examples"]
    assert examples
    for model, queue in examples.items():
        assert contract.task_queue_for(model) == queue
    long = contract.task_queue_for("org/" + "x" * 100)
    assert long.startswith("gpu-org-") and len(long) == 4 + 60


def test_valid_request_and_result_pass():
    contract.validate_request(copy.deepcopy(GOOD))
    contract.validate_result({"output_path": "/o.png", "width": 8, "height": 8, "seed": 1,
                              "num_inference_steps": 2, "latency_ms": 1.5, "batch_size": 1, "worker": "w"})


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r.pop("prompt"), "prompt"),
    (lambda r: r.update(extra=1), "extra"),
    (lambda r: r.update(seed=-1), "seed"),
    (lambda r: r.update(seed=2**32), "seed"),
    (lambda r: r.update(model_type="dalle"), "model_type"),
    (lambda r: r["params"].update(steps=3), "steps"),
    (lambda r: r["params"].update(num_inference_steps=0), "num_inference_steps"),
    (lambda r: r.update(input_images=["/x.png"] * 17), "input_images"),
    (lambda r: r.update(output_path=""), "output_path"),
])
def test_bad_requests_rejected(mutate, where):
    bad = copy.deepcopy(GOOD)
    mutate(bad)
    with pytest.raises(contract.ContractError) as ei:
        contract.validate_request(bad)
    assert where in str(ei.value)


def test_bad_results_rejected():
    with pytest.raises(contract.ContractError):
        contract.validate_result({"output_path": "/o.png", "width": 0, "height": 8, "seed": 1,
                                  "num_inference_steps": 2, "latency_ms": 1, "batch_size": 1})


def test_activity_rejects_invalid_input_as_non_retryable(make_service, tiny_models, images, tmp_path):
    svc = make_service("instruct-pix2pix")
    env = ActivityEnvironment()
    model = tiny_models["instruct-pix2pix"]
    out = str(tmp_path / "o.png")
    cases = [
        "not an object",
        {**request(model, "instruct-pix2pix", [images["red"]], out), "seed": "7"},
        request(model, "flux-kontext", [images["red"]], out),  # wrong model type for this worker
        request("someone/else", "instruct-pix2pix", [images["red"]], out),  # wrong model
        request(model, "instruct-pix2pix", [images["red"]], out, params={"true_cfg_scale": 4.0}),  # unsupported
        request(model, "instruct-pix2pix", [images["red"], images["green"]], out),  # too many images
        request(model, "instruct-pix2pix", [], out),
    ]
    for payload in cases:
        with pytest.raises(ApplicationError) as ei:
            env.run(svc.edit_image_gpu, payload)
        assert ei.value.type == "InvalidRequest", payload
        assert ei.value.non_retryable
    assert not (tmp_path / "o.png").exists()


def test_input_errors_are_final(make_service, tiny_models, images, tmp_path):
    svc = make_service("instruct-pix2pix")
    env = ActivityEnvironment()
    model = tiny_models["instruct-pix2pix"]
    for bad in (images["missing"], images["corrupt"]):
        with pytest.raises(ApplicationError) as ei:
            env.run(svc.edit_image_gpu, request(model, "instruct-pix2pix", [bad], str(tmp_path / "o.png")))
        assert ei.value.type == "InputError" and ei.value.non_retryable
    assert svc.engine.batcher._preparing == 0  # withdrawn, so the batcher does not wait for them
