"""Entry point: ``python -m atelier_gpu.worker --model M [--model-type T] --gpus 0,1 ...``.

With several GPUs the process starts one child per GPU (CUDA_VISIBLE_DEVICES=<id>) and forwards SIGTERM /
SIGINT to them. Each child (or the process itself, for one GPU or ``--gpus cpu``) loads the pipeline once, warms
it up, then polls the task queue. SIGTERM/SIGINT: stop polling, finish the batch in progress, fail rows not
started yet with a retryable WorkerShutdown error, wait for running activities (--graceful-shutdown-s), exit 0.

Prints one JSON line on stdout when polling starts: {"event": "ready", "task_queue": ..., ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

log = logging.getLogger("atelier_gpu.worker")


def _sizes(spec: str) -> list[tuple[int, int]]:
    """WxH[,WxH...] -> [(w, h), ...]"""
    sizes = []
    for part in spec.split(","):
        w, sep, h = part.strip().lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not WIDTHxHEIGHT (e.g. 1024x1024,832x1248)")
        sizes.append((int(w), int(h)))
    return sizes


def _lora(spec: str) -> tuple[str, float]:
    """PATH_OR_ID[=SCALE]"""
    if "=" in spec:
        ref, scale = spec.rsplit("=", 1)
        return ref, float(scale)
    return spec, 1.0


def build_parser() -> argparse.ArgumentParser:
    from .models import ADAPTERS

    p = argparse.ArgumentParser(
        prog="python -m atelier_gpu.worker",
        description="Atelier GPU worker: serves the editImageGpu activity for one diffusers model.",
    )
    p.add_argument("--model", required=True, help="hub id or local folder (save_pretrained layout)")
    p.add_argument("--model-type", choices=[*ADAPTERS, "plugin"],
                   help="default: detected from the model name (plugin with --adapter)")
    p.add_argument("--adapter", metavar="MODULE:CLASS | ENTRY_POINT",
                   help="serve the model with a plugin adapter (interface version 1, gpu-workers/README.md): a "
                        "class given as module:Class, or an entry point of the group atelier_gpu.adapters; the "
                        "wire model type is then plugin")
    p.add_argument("--task-queue", help="default: the contract's rule, gpu-<model key>")
    p.add_argument("--address", default=os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"),
                   help="Temporal frontend host:port (default $TEMPORAL_ADDRESS or localhost:7233)")
    p.add_argument("--namespace", default=os.environ.get("TEMPORAL_NAMESPACE", "default"),
                   help="default $TEMPORAL_NAMESPACE or 'default'")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids, one worker process each; 'cpu' runs on the CPU "
                        "(default: all visible GPUs, or cpu when there are none)")
    p.add_argument("--batch-size", type=int, default=1, help="max rows per pipeline call (batch-capable models)")
    p.add_argument("--max-batch-wait-ms", type=float, default=50.0,
                   help="how long a ready row waits for compatible rows that are still being prepared")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="activities at once per process (default 4 x batch-size: one batch on the GPU, one "
                        "prepared behind it, one encoding and writing, one being polled and decoded)")
    g = p.add_argument_group("generation defaults (a row's params override them)")
    g.add_argument("--num-inference-steps", type=int)
    g.add_argument("--guidance-scale", type=float)
    g.add_argument("--true-cfg-scale", type=float)
    g.add_argument("--negative-prompt")
    g.add_argument("--max-area", type=int, default=1024 * 1024,
                   help="pixel area cap for inputs/outputs where the model type sizes by area (default 1 MP)")
    m = p.add_argument_group("model loading and speed")
    m.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="auto: bf16 on CUDA, fp32 on CPU")
    m.add_argument("--device", default="auto", help="auto | cuda | cpu (with --gpus cpu: cpu)")
    m.add_argument("--attention-backend", help="diffusers attention backend, e.g. _native_cudnn, flash, _flash_3")
    m.add_argument("--compile", action="store_true", help="torch.compile the denoiser's repeated blocks")
    m.add_argument("--compile-dynamic", action="store_true")
    m.add_argument("--compile-mode")
    m.add_argument("--cpu-offload", default="none", choices=["none", "model", "sequential", "group"])
    m.add_argument("--lora", action="append", default=[], type=_lora, metavar="PATH_OR_ID[=SCALE]",
                   help="load a LoRA (repeatable); a .safetensors file, a folder or a hub id")
    m.add_argument("--no-fuse-lora", action="store_true", help="keep LoRAs unfused (default: fuse into weights)")
    m.add_argument("--variant")
    m.add_argument("--revision")
    m.add_argument("--local-files-only", action="store_true",
                   help="never download (implied by HF_HUB_OFFLINE=1 or a local folder)")
    m.add_argument("--warmup-steps", type=int, default=2, help="0 disables the warm-up run")
    m.add_argument("--warmup-sizes", type=_sizes, default=[], metavar="WxH[,WxH...]",
                   help="output sizes to warm up (with --compile: each size in use compiles here, not on the first "
                        "row of that size); default: the --max-area square")
    sp = p.add_argument_group("speed options (quality trade-offs; see gpu-workers/README.md)")
    sp.add_argument("--preset", choices=["lightning"],
                   help="lightning (qwen, qwen-plus): the Lightning LoRA given with --lora, its scheduler, "
                        "8 steps, CFG off")
    sp.add_argument("--quantize", choices=["fp8"], help="fp8: the denoiser's weights and activations in FP8 "
                                                       "(torchao; compute capability >= 8.9)")
    sp.add_argument("--cache", choices=["first-block", "taylorseer", "magcache"],
                   help="reuse denoiser outputs across steps (diffusers cache hooks)")
    sp.add_argument("--cache-threshold", type=float, help="first-block / magcache threshold (default: diffusers')")
    sp.add_argument("--cache-mag-ratios", metavar="JSON_FILE",
                   help="magcache's calibrated ratios for this model (FLUX.1 Kontext has built-in ones)")
    p.add_argument("--graceful-shutdown-s", type=float, default=600.0,
                   help="on SIGTERM, how long running activities may take before they are cancelled")
    p.add_argument("--identity", help="worker identity (default host:pid:gpuN)")
    p.add_argument("--log-level", default=os.environ.get("ATELIER_GPU_LOG_LEVEL", "INFO"))
    return p


def emit_event(event: dict[str, Any]) -> None:
    """One JSON line on stdout, written by one write(2) of the line and its newline together.

    The supervisor's children share the parent's stdout pipe, and under PYTHONUNBUFFERED `print` writes the text
    and the newline separately, so two children's lines could glue together. A pipe write of at most PIPE_BUF
    bytes (4096 on Linux) is atomic; an event is a few hundred bytes.
    """
    data = (json.dumps(event) + "\n").encode("utf-8")
    sys.stdout.flush()  # anything printed earlier goes first
    fd = sys.stdout.fileno()
    while data:
        written = os.write(fd, data)
        data = data[written:]


# The stages a row's activity slot is held through, each up to a whole batch at once in steady state. With fewer
# slots (the old 2 x B + 1) a sub-second model such as FLUX.2-klein finishes its batch while the previous batch
# is still encoding its PNGs and reporting, and no full batch is ready behind it: the GPU waits on the CPU.
ROW_STAGES = ("denoising on the GPU", "prepared and queued behind it", "encoding + writing + reporting",
              "polled and decoding")


def default_max_concurrent(batch_size: int) -> int:
    """Activity slots per process: every stage of ROW_STAGES can hold a full batch, so the GPU never waits."""
    return len(ROW_STAGES) * max(1, batch_size)


def _nvidia_smi_gpu_count() -> int:
    """Every GPU of the machine: nvidia-smi ignores CUDA_VISIBLE_DEVICES."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode == 0:
            return len([ln for ln in out.stdout.splitlines() if ln.strip()])
    except (OSError, subprocess.TimeoutExpired):
        pass
    return 0


def _visible_devices_from_env() -> list[str] | None:
    """The device ids CUDA_VISIBLE_DEVICES lets this process use, or None when it is unset.

    CUDA reads the list up to the first invalid entry, so "" and "-1" hide every GPU and "1,-1,2" means "1".
    """
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    ids: list[str] = []
    for part in raw.split(","):
        entry = part.strip()
        if not entry or entry.startswith("-"):
            break
        ids.append(entry)
    return ids


def _visible_gpu_ids() -> list[str]:
    visible = _visible_devices_from_env()
    if visible is not None:
        return visible
    return [str(i) for i in range(_nvidia_smi_gpu_count())]


def _gpu_list(args: argparse.Namespace) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each worker process to start ("cpu": one process on the CPU).

    --gpus N,M are positions among the visible devices, as torch's cuda:N: with CUDA_VISIBLE_DEVICES=4,5,6,
    --gpus 0,2 starts processes on devices 4 and 6. Without the variable they are the machine's GPU indices.
    """
    if os.environ.get("ATELIER_GPU_CHILD"):
        # a supervisor's child: its CUDA_VISIBLE_DEVICES is the one device it was started for
        return [os.environ.get("CUDA_VISIBLE_DEVICES", "0")]
    if args.gpus is None:
        ids = _visible_gpu_ids()
        return ids or ["cpu"]
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    if not gpus or gpus == ["cpu"]:
        return ["cpu"]
    visible = _visible_devices_from_env()
    if visible is None:
        return gpus
    chosen = []
    for g in gpus:
        if not g.isdigit() or int(g) >= len(visible):
            span = f"0-{len(visible) - 1}" if visible else "none"
            raise SystemExit(f"--gpus {g}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} makes "
                             f"{len(visible)} GPUs visible ({span})")
        chosen.append(visible[int(g)])
    return chosen


def _die_with_parent() -> None:
    """In a child, before exec: get SIGTERM if the supervisor dies (even by SIGKILL), so no GPU stays held."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: best effort
        pass


def _supervise(argv: list[str], gpus: list[str]) -> int:
    """Start one child per GPU, forward signals, exit with the worst child status."""
    children: list[subprocess.Popen] = []
    base = [a for a in argv]
    # drop any --gpus X / --gpus=X from argv, children get their own
    cleaned: list[str] = []
    skip = False
    for a in base:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        cleaned.append(a)
    for gpu in gpus:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, ATELIER_GPU_CHILD="1", ATELIER_GPU_INDEX=gpu)
        cmd = [sys.executable, "-m", "atelier_gpu.worker", *cleaned, "--gpus", gpu]
        children.append(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent))
    stopping = {"sig": None}

    def forward(signum, _frame):
        stopping["sig"] = signum
        for c in children:
            if c.poll() is None:
                try:
                    c.send_signal(signum)
                except OSError:
                    pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for c in children:
        while True:
            try:
                codes.append(c.wait())
                break
            except InterruptedError:  # pragma: no cover
                continue
    bad = [c for c in codes if c != 0]
    return bad[0] if bad else 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(gpu)s] %(name)s: %(message)s",
    )
    old = logging.getLogRecordFactory()

    def factory(*a, **kw):
        rec = old(*a, **kw)
        rec.gpu = os.environ.get("ATELIER_GPU_INDEX") or os.environ.get("CUDA_VISIBLE_DEVICES") or "-"
        return rec

    logging.setLogRecordFactory(factory)
    # transformers warns at import about optional torchvision processors we do not use
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for noisy in ("diffusers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_service(args: argparse.Namespace, device: str | None = None):
    """Load the pipeline, warm it up and return an EditService (+ the Engine, started). Used by run_worker."""
    from .engine import Engine
    from .loading import LoadOptions, load_pipeline
    from .models import detect_model_type, get_adapter
    from .plugins import PluginError
    from .speed import SpeedOptions

    overrides = {"num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
                 "true_cfg_scale": args.true_cfg_scale, "negative_prompt": args.negative_prompt}
    if getattr(args, "adapter", None):
        return _build_plugin_service(args, overrides, device)
    if args.model_type == "plugin":
        raise PluginError("--model-type plugin needs --adapter MODULE:CLASS (or an atelier_gpu.adapters entry point)")
    model_type = args.model_type or detect_model_type(args.model, args.revision)
    adapter = get_adapter(model_type, max_area=args.max_area, worker_overrides=overrides,
                          attention_backend=args.attention_backend)
    opts = LoadOptions(
        device=device or args.device, dtype=args.dtype, attention_backend=args.attention_backend,
        compile=args.compile, compile_dynamic=args.compile_dynamic, compile_mode=args.compile_mode,
        cpu_offload=args.cpu_offload, loras=list(args.lora), fuse_lora=not args.no_fuse_lora,
        variant=args.variant, revision=args.revision, local_files_only=True if args.local_files_only else None,
        speed=SpeedOptions(preset=args.preset, quantize=args.quantize, cache=args.cache,
                           cache_threshold=args.cache_threshold, cache_mag_ratios=args.cache_mag_ratios),
    )
    t0 = time.monotonic()
    pipe = load_pipeline(args.model, adapter, opts)
    log.info("loaded %s (%s) in %.1fs", args.model, model_type, time.monotonic() - t0)
    engine = Engine(pipe, adapter, max_batch=max(1, args.batch_size),
                    max_wait_s=max(0.0, args.max_batch_wait_ms) / 1000.0)
    return _start_service(args, engine, model_type)


# diffusers-only loading options: a plugin loads its model with its own code, so these would be silently ignored
_DIFFUSERS_ONLY = (("compile", "--compile"), ("cpu_offload", "--cpu-offload"), ("lora", "--lora"),
                   ("attention_backend", "--attention-backend"), ("variant", "--variant"), ("revision", "--revision"),
                   ("preset", "--preset"), ("quantize", "--quantize"), ("cache", "--cache"))


def _build_plugin_service(args: argparse.Namespace, overrides: dict[str, Any], device: str | None):
    """The EditService of a plugin adapter (--adapter): same engine, batcher, heartbeats and activity."""
    from .engine import Engine
    from .plugins import PLUGIN_MODEL_TYPE, PluginAdapter, PluginError, load_plugin

    if args.model_type not in (None, PLUGIN_MODEL_TYPE):
        raise PluginError(f"--adapter serves model type {PLUGIN_MODEL_TYPE}; drop --model-type {args.model_type}")
    used = [flag for attr, flag in _DIFFUSERS_ONLY if getattr(args, attr, None) not in (None, False, [], "none")]
    if used:
        raise PluginError(f"{', '.join(used)} apply to diffusers pipelines only, not to --adapter {args.adapter}")
    t0 = time.monotonic()
    plugin, pipe = load_plugin(args.adapter, args.model, device=device or args.device, dtype=args.dtype)
    adapter = PluginAdapter(plugin, max_area=args.max_area, worker_overrides=overrides)
    log.info("loaded %s with plugin %s (%s) in %.1fs", args.model, plugin.name, adapter.pipeline_class,
             time.monotonic() - t0)
    engine = Engine(pipe, adapter, max_batch=max(1, min(args.batch_size, int(plugin.max_batch))),
                    max_wait_s=max(0.0, args.max_batch_wait_ms) / 1000.0)
    return _start_service(args, engine, PLUGIN_MODEL_TYPE)


def _start_service(args: argparse.Namespace, engine: Any, model_type: str):
    from .activity import EditService

    if args.warmup_steps > 0:
        batches = (1, engine.max_batch) if args.compile and engine.max_batch > 1 else (1,)
        log.info("warm-up: %.1fs", engine.warmup(steps=args.warmup_steps, batch_sizes=batches,
                                                   sizes=args.warmup_sizes or None))
    engine.start()
    gpu = os.environ.get("ATELIER_GPU_INDEX") or os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu"
    where = "cpu" if gpu == "cpu" else f"gpu{gpu}"
    identity = args.identity or f"{socket.gethostname()}:{os.getpid()}:{where}"
    return EditService(engine, args.model, worker_id=identity), model_type


async def run_worker(args: argparse.Namespace, stop: asyncio.Event | None = None,
                     service: Any | None = None, model_type: str | None = None) -> None:
    from temporalio.worker import Worker

    from .connect import connect
    from .contract import task_queue_for

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not main thread / platform
            pass
    task_queue = args.task_queue or task_queue_for(args.model)
    client = await connect(args.address, args.namespace)  # fail fast before the long load; TLS from TEMPORAL_*
    if service is None:
        service, model_type = await asyncio.to_thread(build_service, args)
    service.serve_url_grants(client, loop)  # staged: references: URLs asked of the row workflow (activity.py)
    if stop.is_set():
        service.engine.batcher.shutdown(wait=False)
        log.info("stopped before polling")
        return
    max_conc = args.max_concurrent or default_max_concurrent(service.engine.max_batch)
    with ThreadPoolExecutor(max_workers=max_conc + 2, thread_name_prefix="atelier-activity") as pool:
        worker = Worker(
            client, task_queue=task_queue, activities=[service.edit_image_gpu], activity_executor=pool,
            max_concurrent_activities=max_conc, graceful_shutdown_timeout=timedelta(seconds=args.graceful_shutdown_s),
            identity=service.worker_id,
        )
        run_task = asyncio.create_task(worker.run())
        emit_event({"event": "ready", "task_queue": task_queue, "model": args.model, "model_type": model_type,
                    "namespace": args.namespace, "address": args.address, "worker": service.worker_id,
                    "batch_size": service.engine.max_batch, "max_concurrent": max_conc,
                    **({"adapter": args.adapter} if getattr(args, "adapter", None) else {})})
        log.info("polling %s on %s/%s", task_queue, args.address, args.namespace)
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task in done:  # the worker failed on its own
            stop_task.cancel()
            service.engine.batcher.shutdown(wait=False)
            run_task.result()
            return
        log.info("shutting down: finishing the batch in progress")
        # rows not started yet fail fast (retryable) so they run elsewhere; the current batch finishes
        service.engine.batcher.shutdown(wait=False)
        await worker.shutdown()
        await run_task
        service.engine.batcher.shutdown(wait=True, timeout=5)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    if args.batch_size < 1:
        print("--batch-size must be >= 1", file=sys.stderr)
        return 1
    gpus = _gpu_list(args)
    if len(gpus) > 1:
        return _supervise(argv, gpus)
    if gpus[0] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["ATELIER_GPU_INDEX"] = "cpu"
        device = "cpu" if args.device == "auto" else args.device
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]  # before torch is imported
        os.environ.setdefault("ATELIER_GPU_INDEX", gpus[0])
        device = "cuda" if args.device == "auto" else args.device
    args.device = device
    from .loading import PipelineUnavailable
    from .models import UnknownModelType
    from .plugins import PluginError
    from .speed import SpeedOptionError

    try:
        asyncio.run(run_worker(args))
    except KeyboardInterrupt:
        return 130
    except (SpeedOptionError, PipelineUnavailable, PluginError, UnknownModelType) as e:
        # a set-up problem: the message, not a traceback
        print(f"atelier-gpu worker: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
