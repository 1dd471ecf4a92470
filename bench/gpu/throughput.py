#!/usr/bin/env python3
"""Atelier GPU worker throughput vs a bare diffusers loop, and the GPU's busy share.

    # on a GPU machine (full-size architectures, random weights, nothing downloaded):
    gpu-workers/scripts/python.sh bench/gpu/throughput.py --model-type instruct-pix2pix --batch-size 8 --rows 64
    gpu-workers/scripts/python.sh bench/gpu/throughput.py --model-type flux-kontext --rows 12 --steps 28
    # here, on the CPU, to check that it works (tiny random pipelines built locally):
    gpu-workers/scripts/python.sh bench/gpu/throughput.py --tiny
    # check the full-size configs without memory (meta device) and print parameter counts:
    gpu-workers/scripts/python.sh bench/gpu/throughput.py --dry-run --model-type flux-kontext

What it measures, on one pipeline object shared by both runs (same settings, sizes, seeds and batch size):
- bare: a plain loop of pipe(...) calls over pre-decoded, pre-resized images; outputs kept as PIL, not saved.
- atelier: the worker's activity path (EditService.edit_image_gpu) driven by as many concurrent activity
  threads as the worker runs (4 x batch), each decoding its PNG, going through the micro-batcher and the
  GPU thread (step-callback heartbeats included), then encoding and atomically writing its PNG. The Temporal
  server round trip is not included (ActivityEnvironment); it adds a few ms per row, off the GPU thread.
- ratio = atelier images/s / bare images/s (goal >= 0.97).
- GPU busy share during the atelier run: NVML utilization (pynvml) or nvidia-smi sampling, the fraction of
  time a kernel was running (goal >= 95%); plus the pipeline thread's busy share (time inside pipe calls / wall),
  which is what --tiny reports on the CPU.
It prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent.parent / "gpu-workers"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# --- full-size architectures (published configs, random weights) ---------------------------------------------

def _clip_l_text(vocab_eos: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    # openai/clip-vit-large-patch14 text tower (SD 1.x, FLUX.1)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0,
        eos_token_id=vocab_eos, pad_token_id=vocab_eos,
    ))


def full_pix2pix(on_device):
    from diffusers import (
        AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )

    from tiny_pipelines import _clip_tokenizer

    # tokenizer and scheduler on the CPU in fp32; only the models go to the device
    tok = _clip_tokenizer()
    sched = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    with on_device():
        unet = UNet2DConditionModel(  # timbrooks/instruct-pix2pix unet/config.json (SD 1.5, 8 input channels)
            sample_size=64, in_channels=8, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        )
        vae = AutoencoderKL(  # SD 1.x VAE
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215,
        )
        text_encoder = _clip_l_text(tok.eos_token_id)
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )


def full_flux_kontext(on_device):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from tiny_pipelines import _clip_tokenizer, _t5_tokenizer

    tok, tok2 = _clip_tokenizer(), _t5_tokenizer()
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    with on_device():
        transformer = FluxTransformer2DModel(  # black-forest-labs/FLUX.1-Kontext-dev transformer/config.json
            patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        )
        t5 = T5EncoderModel(T5Config(  # google/t5-v1_1-xxl encoder
            vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
            is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
        ))
        vae = AutoencoderKL(  # FLUX.1 autoencoder
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, use_quant_conv=False,
            use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        )
        text_encoder = _clip_l_text(tok.eos_token_id)
    return FluxKontextPipeline(
        scheduler=sched, vae=vae, text_encoder=text_encoder, tokenizer=tok, text_encoder_2=t5,
        tokenizer_2=tok2, transformer=transformer, image_encoder=None, feature_extractor=None,
    )


FULL = {"instruct-pix2pix": full_pix2pix, "flux-kontext": full_flux_kontext}
DEFAULTS = {  # (size, steps, batch) used when not given
    "instruct-pix2pix": ((512, 512), 20, 8),
    "flux-kontext": ((1024, 1024), 28, 1),
}


def build_full(model_type: str, device: str, dtype):
    """Random weights allocated and initialised directly on `device` in `dtype` (meta: no memory at all)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def on_device():
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                yield
        finally:
            torch.set_default_dtype(prev)

    pipe = FULL[model_type](on_device)
    if device != "meta":
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- GPU busy sampling ----------------------------------------------------------------------------------------

def torch_gpu_pci_bus_id() -> str | None:
    """The PCI bus id of the GPU torch runs on. NVML and nvidia-smi number GPUs physically and ignore
    CUDA_VISIBLE_DEVICES, so index 0 there can be another GPU than torch's cuda:0; the bus id names the same one."""
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    return f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"


class GpuSampler:
    """Mean GPU utilization (% of time a kernel ran) over [start, stop], via NVML or nvidia-smi, of the GPU torch
    uses (found by PCI bus id; the first visible GPU when torch does not report one)."""

    def __init__(self, pci_bus_id: str | None = None, period_s: float = 0.1):
        self.pci_bus_id, self.period_s = pci_bus_id, period_s
        self.index = 0
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self.source = None

    def start(self) -> "GpuSampler":
        try:
            import pynvml  # type: ignore

            pynvml.nvmlInit()
            if self.pci_bus_id:
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(self.pci_bus_id.encode())
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.source = "nvml"

            def loop():
                while not self._stop.wait(self.period_s):
                    self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
            return self
        except Exception:  # noqa: BLE001
            pass
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", f"--id={self.pci_bus_id or self.index}", "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits",
                 f"-lms={int(self.period_s * 1000)}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.source = "nvidia-smi"

            def read():
                for line in self._proc.stdout:
                    try:
                        self.samples.append(float(line.strip()))
                    except ValueError:
                        pass

            self._thread = threading.Thread(target=read, daemon=True)
            self._thread.start()
        except OSError:
            self.source = None
        return self

    def stop(self) -> float | None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        if self._thread is not None:
            self._thread.join(2)
        # drop the first and last samples (ramp up / down)
        s = self.samples[1:-1] if len(self.samples) > 4 else self.samples
        return sum(s) / len(s) / 100.0 if s else None


# --- the two runs ---------------------------------------------------------------------------------------------

def make_inputs(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"in{i:04d}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_loop(pipe, adapter, paths, prompts, seeds, settings, batch) -> float:
    import torch

    from atelier_gpu.images import load_image

    rows = [adapter.prepare(p, [load_image(path)], s, settings) for path, p, s in zip(paths, prompts, seeds)]
    _sync()
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        kw = adapter.call_kwargs(chunk)
        gens = [torch.Generator("cpu").manual_seed(r.seed) for r in chunk]
        kw["generator"] = gens[0] if len(gens) == 1 else gens
        pipe(**kw).images  # noqa: B018 - PIL outputs, like a plain script
    _sync()
    return time.perf_counter() - t0


def atelier_run(pipe, adapter, model, paths, prompts, seeds, steps, batch, out_dir: Path):
    from temporalio.testing import ActivityEnvironment

    from atelier_gpu.activity import EditService
    from atelier_gpu.engine import Engine
    from atelier_gpu.worker import default_max_concurrent

    engine = Engine(pipe, adapter, max_batch=batch, max_wait_s=0.05).start()
    svc = EditService(engine, model, worker_id="bench")
    requests = [{
        "run_id": "bench", "row_index": i, "model": model, "model_type": adapter.model_type, "prompt": prompts[i],
        "input_images": [paths[i]], "output_path": str(out_dir / f"{i:06d}.png"), "seed": seeds[i],
        "params": {"num_inference_steps": steps},
    } for i in range(len(paths))]
    lock = threading.Lock()
    nxt = {"i": 0}
    results: list = []
    errors: list = []

    def activity_slot():  # like one of the worker's max_concurrent activity slots
        while True:
            with lock:
                i = nxt["i"]
                nxt["i"] += 1
            if i >= len(requests):
                return
            try:
                results.append(ActivityEnvironment().run(svc.edit_image_gpu, requests[i]))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    slots = [threading.Thread(target=activity_slot) for _ in range(default_max_concurrent(engine.max_batch))]
    _sync()
    t0 = time.perf_counter()
    for t in slots:
        t.start()
    for t in slots:
        t.join()
    _sync()
    wall = time.perf_counter() - t0
    engine.batcher.shutdown()
    if errors:
        raise errors[0]
    return wall, engine.stats, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="instruct-pix2pix", choices=sorted(FULL))
    ap.add_argument("--tiny", action="store_true", help="tiny random pipeline on the CPU (checks the script)")
    ap.add_argument("--dry-run", action="store_true", help="build the full-size models on the meta device only")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--size", default=None, help="input WxH (default 512x512 pix2pix, 1024x1024 Kontext)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the repeated blocks (both runs)")
    ap.add_argument("--attention-backend")
    ap.add_argument("--repeats", type=int, default=3, help="bare/atelier run pairs (alternating); medians reported")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from atelier_gpu.loading import LoadOptions, denoiser_of, load_pipeline, resolve_dtype
    from atelier_gpu.models import get_adapter

    (dw, dh), dsteps, dbatch = DEFAULTS[args.model_type]
    if args.tiny:
        (dw, dh), dsteps, dbatch = (64, 64), 4, 4
    size = tuple(int(x) for x in args.size.split("x")) if args.size else (dw, dh)
    steps = args.steps or dsteps
    batch = args.batch_size or dbatch
    rows = args.rows or (8 * batch if args.tiny else max(4 * batch, 8))

    if args.dry_run:
        pipe = build_full(args.model_type, "meta", torch.bfloat16)
        for name, comp in pipe.components.items():
            if isinstance(comp, torch.nn.Module):
                print(f"{name:16s} {sum(p.numel() for p in comp.parameters()) / 1e9:8.3f} B params")
        return 0

    max_area = size[0] * size[1]
    adapter = get_adapter(args.model_type, max_area=max_area)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = resolve_dtype(args.dtype, device)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    if args.tiny:
        from tiny_pipelines import build_tiny

        model = build_tiny(args.model_type, tmp / "model")
        pipe = load_pipeline(model, adapter, LoadOptions(device=device, dtype=args.dtype, compile=args.compile,
                                                         attention_backend=args.attention_backend))
    else:
        model = f"random-full-{args.model_type}"
        pipe = build_full(args.model_type, device, dtype)
        den = denoiser_of(pipe)
        if args.attention_backend:
            den.set_attention_backend(args.attention_backend)
        if args.compile:
            den.compile_repeated_blocks(fullgraph=True) if getattr(den, "_repeated_blocks", None) else den.compile()
    build_s = time.perf_counter() - t0

    paths = make_inputs(tmp / "in", rows, size)
    prompts = [f"make row {i} look like a watercolor painting" for i in range(rows)]
    seeds = list(range(1000, 1000 + rows))
    settings = adapter.resolve({"num_inference_steps": steps})

    # warm-up both paths (kernels, allocator, compiled graphs) at the measured batch size
    bare_loop(pipe, adapter, paths[:batch], prompts[:batch], seeds[:batch], settings, batch)
    atelier_run(pipe, adapter, model, paths[:batch], prompts[:batch], seeds[:batch], steps, batch, tmp / "warm")

    # bare and atelier runs alternate, so drift (clocks, thermals, other load) hits both alike
    bare_runs: list[float] = []
    atelier_runs: list[float] = []
    busy_runs: list[float] = []
    sampler = None
    for rep in range(max(1, args.repeats)):
        box: dict = {}  # the bare loop runs on its own thread too, like the worker's GPU thread
        t = threading.Thread(target=lambda: box.setdefault("s", bare_loop(pipe, adapter, paths, prompts, seeds,
                                                                           settings, batch)))
        t.start()
        t.join()
        bare_runs.append(box["s"])
        sampler = GpuSampler(torch_gpu_pci_bus_id()).start() if device == "cuda" else None
        at_s, stats, results = atelier_run(pipe, adapter, model, paths, prompts, seeds, steps, batch,
                                           tmp / f"out{rep}")
        atelier_runs.append(at_s)
        busy = sampler.stop() if sampler else None
        if busy is not None:
            busy_runs.append(busy)
    import statistics

    bare_s, at_s = statistics.median(bare_runs), statistics.median(atelier_runs)
    busy = statistics.median(busy_runs) if busy_runs else None

    fig = {
        "model_type": args.model_type, "tiny": args.tiny, "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "dtype": str(dtype).replace("torch.", ""),
        "size": f"{size[0]}x{size[1]}", "steps": steps, "batch": batch, "rows": rows, "build_s": round(build_s, 1),
        "bare_img_s": round(rows / bare_s, 4), "atelier_img_s": round(rows / at_s, 4),
        "ratio": round(bare_s / at_s, 4), "repeats": len(bare_runs),
        "ratio_runs": [round(b / a, 4) for b, a in zip(bare_runs, atelier_runs)],
        "gpu_pci_bus_id": torch_gpu_pci_bus_id() if device == "cuda" else None,
        "gpu_busy_share": None if busy is None else round(busy, 4),
        "gpu_busy_source": sampler.source if sampler else None,
        "pipeline_thread_busy_share": round(stats.busy_s / atelier_runs[-1], 4),  # stats are the last run's
        "atelier_batch_sizes": sorted(set(stats.batch_sizes)),
        "outputs_written": sum(1 for r in results if Path(r["output_path"]).is_file()),
    }
    print(f"model {fig['model_type']}{' (tiny, CPU)' if args.tiny else ''} on {fig['gpu'] or device}, "
          f"{fig['dtype']}, {fig['size']}, {steps} steps, batch {batch}, {rows} rows")
    print(f"  bare diffusers loop : {fig['bare_img_s']:.4f} images/s")
    print(f"  atelier worker path : {fig['atelier_img_s']:.4f} images/s   (batches of {fig['atelier_batch_sizes']})")
    print(f"  ratio atelier/bare  : {fig['ratio']:.3f}   (goal >= 0.97; median of {fig['repeats']}: "
          f"{fig['ratio_runs']})")
    if busy is not None:
        print(f"  GPU busy share      : {busy:.1%} ({fig['gpu_busy_source']})   (goal >= 95%)")
    else:
        print("  GPU busy share      : n/a (no GPU / no NVML or nvidia-smi)")
    print(f"  pipeline thread busy: {fig['pipeline_thread_busy_share']:.1%} of the atelier run's wall time")
    print(f"  outputs written     : {fig['outputs_written']}/{rows}")
    if device == "cpu":
        print("  (CPU run: checks that the script works; the ratio means little here, because the pipeline, the\n"
              "   decode/encode threads and anything else on the machine share the same cores)")
    if args.json:
        print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
