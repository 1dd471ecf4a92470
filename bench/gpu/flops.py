#!/usr/bin/env python3
"""Achieved TFLOP/s of a full-size Qwen-Image transformer (20B, random weights) on one GPU, against a dense bf16
GEMM measured in the same run and against the H200's ~790 TFLOP/s dense bf16 ceiling.

    # on a GPU machine (nothing downloaded; ~41 GB of bf16 weights are allocated on the GPU):
    gpu-workers/scripts/python.sh bench/gpu/flops.py --repeats 5 --json-out $OUT/flops.json
    # here, on the CPU, to check that the script works (a tiny config of the same architecture):
    gpu-workers/scripts/python.sh bench/gpu/flops.py --tiny

What one "step" is: a 1024x1024 Qwen-Image-Edit-2509/2511 step with true CFG, i.e. two transformer forwards
(prompt and negative prompt) over 4,096 target + 4,096 reference latent tokens plus the text tokens (~300 for
2509/2511, whose VL encoder sees the image at 384^2; ~1,450 for v1 at ~1 MP: --text-tokens). Cases measured:
- cfg-serial: the two forwards one after the other (what diffusers' Qwen pipelines do),
- cfg-batched: both in one batch of 2 (same FLOPs, fewer launches),
- cfg-batched-masked: batch of 2 with the negative prompt padded (an attention mask: what batched rows of
  different prompt lengths cost; flash kernels refuse it, native SDPA falls back to a slower kernel).
FLOPs come from the architecture, not a profiler: 2 x (weights of every Linear a token passes through) x tokens,
plus attention 4 x N^2 x d per block (QK^T and AV, N = all tokens, d = heads x head_dim). Timing: CUDA events,
warm-up forwards first, then --repeats timed runs; the median and best are reported. Random-normal inputs, not
zeros (zeros run faster than real data on tensor cores). The GEMM baseline is an 8192^3 bf16 matmul.
The floor at 790 TFLOP/s is ~0.43 s per CFG step; published SGLang figures for an H200 are 0.61-0.64 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent.parent / "gpu-workers"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

H200_DENSE_BF16_TFLOPS = 790.0  # dense bf16 GEMM ceiling measured on an H200 (../shared/reference/gpu-audit.md)

# Qwen/Qwen-Image(-Edit-2509/2511) transformer/config.json
QWEN_FULL = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=3584, axes_dims_rope=(16, 56, 56))
QWEN_TINY = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6))


def linear_weights_per_token(transformer, stream: str) -> int:
    """Weights of the Linear layers one token of `stream` ("img" or "txt") passes through, over all blocks.
    Modulation layers (img_mod / txt_mod) run once per sample, not per token, so they are left out."""
    import torch

    total = 0
    for block in transformer.transformer_blocks:
        for name, module in block.named_modules():
            if not isinstance(module, torch.nn.Linear) or "_mod" in name:
                continue
            is_txt = name.startswith(("txt_", "attn.add_", "attn.to_add_out"))  # the text stream's projections
            if (stream == "txt") == is_txt:
                total += module.weight.numel()
    return total


def forward_flops(transformer, n_img: int, n_txt: int) -> float:
    """FLOPs of one forward of one sample."""
    cfg = transformer.config
    d = cfg.num_attention_heads * cfg.attention_head_dim
    n = n_img + n_txt
    linear = 2.0 * (linear_weights_per_token(transformer, "img") * n_img +
                    linear_weights_per_token(transformer, "txt") * n_txt)
    attention = 4.0 * n * n * d * cfg.num_layers
    return linear + attention


def gemm_tflops(device: str, dtype, size: int, repeats: int) -> float:
    """Dense matmul throughput on this device, measured now: the baseline the transformer is compared with."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        t = _timed(lambda: a @ b, device)
        if i >= 2:
            times.append(t)
    return 2.0 * size ** 3 / min(times) / 1e12


def _timed(fn, device: str) -> float:
    import torch

    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build_transformer(config: dict, device: str, dtype):
    import torch
    from diffusers import QwenImageTransformer2DModel

    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # allocated and initialised where it runs: no 41 GB host copy
            model = QwenImageTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(prev)
    return model.eval().requires_grad_(False)


def make_inputs(transformer, batch: int, latent_hw: tuple[int, int], n_txt: int, device: str, dtype,
                pad_last: int = 0):
    """Inputs of one edit forward: target + one reference latent, packed 2x2, and text embeddings. pad_last:
    that many text tokens of the last sample are padding (mask 0)."""
    import torch

    cfg = transformer.config
    h, w = latent_hw
    n_img_one = (h // 2) * (w // 2)
    gen = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(batch, 2 * n_img_one, cfg.in_channels, generator=gen).to(device, dtype)
    text = torch.randn(batch, n_txt, cfg.joint_attention_dim, generator=gen).to(device, dtype)
    mask = torch.ones(batch, n_txt, dtype=torch.long, device=device)
    if pad_last:
        mask[-1, n_txt - pad_last:] = 0
    timestep = torch.full((batch,), 0.5, device=device, dtype=dtype)
    img_shapes = [[(1, h // 2, w // 2), (1, h // 2, w // 2)]] * batch
    return dict(hidden_states=hidden, encoder_hidden_states=text, encoder_hidden_states_mask=mask,
                timestep=timestep, img_shapes=img_shapes, return_dict=False), 2 * n_img_one


def measure(transformer, cases: dict, device: str, warmup: int, repeats: int) -> dict:
    import torch

    out = {}
    with torch.inference_mode():
        for name, (calls, flops) in cases.items():
            def step():
                for kwargs in calls:
                    transformer(**kwargs)

            for _ in range(warmup):
                step()
            times = [_timed(step, device) for _ in range(repeats)]
            median, best = statistics.median(times), min(times)
            out[name] = {"s_per_step_median": round(median, 4), "s_per_step_best": round(best, 4),
                         "tflop_per_step": round(flops / 1e12, 2), "tflops_median": round(flops / median / 1e12, 1),
                         "tflops_best": round(flops / best / 1e12, 1), "runs": [round(t, 4) for t in times]}
    return out


def gpu_identity(device: str) -> dict:
    """Which physical GPU ran this: the name, and the PCI bus id (CUDA_VISIBLE_DEVICES renumbers devices, so an
    index alone can name another GPU than the one torch used)."""
    import torch

    if not device.startswith("cuda"):
        return {"gpu": None}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    bus = getattr(props, "pci_bus_id", None)
    dev = getattr(props, "pci_device_id", None)
    dom = getattr(props, "pci_domain_id", 0)
    return {"gpu": props.name, "pci_bus_id": None if bus is None else f"{dom:08x}:{bus:02x}:{dev:02x}.0",
            "memory_gib": round(props.total_memory / 2 ** 30, 1), "capability": f"{props.major}.{props.minor}",
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


# --- the FLOPs table of the other editing architectures (estimates; no GPU needed) ------------------------------
# Per 1024x1024 edit with one 1024x1024 reference (ChronoEdit: its example's 720x1280 clip of 5 frames = 2 latent
# frames). Architecture sizes are the diffusers 0.42.1 classes' __init__ defaults, built on the meta device (no
# memory, no download); where the released checkpoint's config.json differs, so does the figure (not checked
# here: no Hub access). ChronoEdit's defaults are Wan2.1-14B's (14.3 B), Z-Image's the 6 B model's.
# (model type, transformer class, image tokens per forward, forwards per step, d = heads x head_dim, blocks, note)
TABLE = [
    ("qwen-image-2.1", "QwenImage21Transformer2DModel", 4096 + 4096, 1, 32 * 128, 32,
     "16x VAE, patch 1; true_cfg 1.0 (no CFG) by default; the condition tokens' K/V are cached after step 1, "
     "so later steps cost less than this"),
    ("joyimage-edit", "JoyImageEditTransformer3DModel", 2 * 4096, 2, 3072, 20,
     "Wan2.1 VAE (8x), patch 2, reference + target as 2 frames; CFG (two forwards)"),
    ("joyimage-edit-plus", "JoyImageEditPlusTransformer3DModel", 2 * 4096, 2, 3072, 20,
     "as joyimage-edit with one reference; +4,096 tokens per further reference"),
    ("chronoedit", "ChronoEditTransformer3DModel", 2 * 45 * 80, 2, 40 * 128, 40,
     "Wan2.1-I2V-14B; 720x1280, 5 frames -> 2 latent frames of 45x80 tokens; CFG"),
    ("z-image-omni", "ZImageTransformer2DModel", 4096 + 4096, 2, 3840, 30,
     "FLUX VAE (8x), patch 2; CFG; SigLIP tokens and the 2 refiner layers left out"),
    ("bria-fibo-edit", "BriaFiboTransformer2DModel", 4096 + 4096, 2, 24 * 128, 19 + 38,
     "Wan2.2 VAE (16x), patch 1; CFG (guidance 5; turbo: 1 forward, 4 steps)"),
    ("omnigen", "OmniGenTransformer2DModel", 4096 + 4096, 3, 3072, 32,
     "Phi-3 (3.8 B) over text + input-image + output latents (8x VAE, patch 2); text and image CFG: 3 forwards"),
]


def table(peak_tflops: float) -> list[dict]:
    """FLOPs per denoising step of each TABLE architecture, from its Linear weights and its token count:
    forwards x (2 x Linear weights x image tokens + 4 x N^2 x d x blocks). Counting every Linear weight for every
    image token over-counts dual-stream models (their text-stream weights see only text tokens) and leaves the text
    tokens out: an estimate, good to ~10-20%, not a measurement."""
    import diffusers
    import torch

    rows = []
    for mtype, cls_name, n_img, forwards, d, blocks, note in TABLE:
        # OmniGen's class has no default RoPE scaling; its values do not change the FLOPs (48 = head_dim / 2)
        kwargs = {"rope_scaling": {"short_factor": [1.0] * 48, "long_factor": [1.0] * 48}} \
            if cls_name == "OmniGenTransformer2DModel" else {}
        with torch.device("meta"):
            model = getattr(diffusers, cls_name)(**kwargs)
        params = sum(p.numel() for p in model.parameters())
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        per_forward = 2.0 * linear * n_img + 4.0 * n_img * n_img * d * blocks
        per_step = forwards * per_forward
        rows.append({"model_type": mtype, "transformer": cls_name, "params_b": round(params / 1e9, 2),
                     "image_tokens": n_img, "forwards_per_step": forwards,
                     "tflop_per_step": round(per_step / 1e12, 1),
                     "floor_s_per_step_at_reference": round(per_step / (peak_tflops * 1e12), 3), "note": note})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a tiny config on the CPU (checks the script)")
    ap.add_argument("--table", action="store_true",
                    help="print the estimated FLOPs per step of the other editing architectures (meta device, "
                         "no GPU) and exit")
    ap.add_argument("--size", default="1024x1024", help="output WxH (default 1024x1024)")
    ap.add_argument("--text-tokens", type=int, default=300, help="text tokens (300: 2509/2511; 1450: v1)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--attention-backend", action="append", default=[],
                    help="diffusers attention backend(s) to compare (repeatable; default: native SDPA only)")
    ap.add_argument("--peak-tflops", type=float, default=H200_DENSE_BF16_TFLOPS,
                    help="reference dense bf16 ceiling (default: the H200's measured 790)")
    ap.add_argument("--json-out", help="also write the figures here")
    args = ap.parse_args()

    if args.table:
        rows = table(args.peak_tflops)
        print(f"{'type':20s} {'params':>8s} {'tokens':>7s} {'fwd':>3s} {'TFLOP/step':>10s} "
              f"{'floor s/step':>12s}  (at {args.peak_tflops:.0f} TFLOP/s)")
        for r in rows:
            print(f"{r['model_type']:20s} {r['params_b']:7.2f}B {r['image_tokens']:7d} {r['forwards_per_step']:3d} "
                  f"{r['tflop_per_step']:10.1f} {r['floor_s_per_step_at_reference']:12.3f}  {r['note']}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(rows, indent=1))
        return 0

    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.tiny:
        print("no CUDA device: run with --tiny to check the script on the CPU", file=sys.stderr)
        return 1
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    w, h = (int(x) for x in args.size.lower().split("x"))
    n_txt = 8 if args.tiny else args.text_tokens
    latent_hw = (h // 8, w // 8) if not args.tiny else (8, 8)
    if args.tiny:
        w, h = 64, 64  # what the tiny latents stand for
    repeats = 1 if args.tiny else args.repeats
    warmup = 1 if args.tiny else args.warmup

    t0 = time.perf_counter()
    transformer = build_transformer(QWEN_TINY if args.tiny else QWEN_FULL, device, dtype)
    build_s = time.perf_counter() - t0
    params_b = sum(p.numel() for p in transformer.parameters()) / 1e9

    one, n_img = make_inputs(transformer, 1, latent_hw, n_txt, device, dtype)
    two, _ = make_inputs(transformer, 2, latent_hw, n_txt, device, dtype)
    two_padded, _ = make_inputs(transformer, 2, latent_hw, n_txt, device, dtype, pad_last=max(1, n_txt // 4))
    per_forward = forward_flops(transformer, n_img, n_txt)
    cases = {
        "cfg-serial": ([one, one], 2 * per_forward),
        "cfg-batched": ([two], 2 * per_forward),
        "cfg-batched-masked": ([two_padded], 2 * per_forward),
    }

    gemm = gemm_tflops(device, dtype, 1024 if args.tiny else 8192, repeats)
    results = {}
    for backend in args.attention_backend or [None]:
        label = backend or "native"
        try:
            if backend:
                transformer.set_attention_backend(backend)
            results[label] = measure(transformer, cases, device, warmup, repeats)
        except Exception as e:  # noqa: BLE001 - one backend failing (not installed, refuses masks) is a result too
            results[label] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        finally:
            if backend:
                transformer.reset_attention_backend()

    fig = {
        "bench": "qwen-image-transformer-flops", "date": time.strftime("%Y-%m-%d"), "tiny": args.tiny,
        **gpu_identity(device), "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
        "params_b": round(params_b, 2), "build_s": round(build_s, 1), "size": f"{w}x{h}",
        "tokens": {"image": n_img, "text": n_txt}, "tflop_per_forward": round(per_forward / 1e12, 2),
        "gemm_tflops_measured": round(gemm, 1), "peak_tflops_reference": args.peak_tflops,
        "floor_s_per_step_at_reference": round(2 * per_forward / (args.peak_tflops * 1e12), 3),
        "results": results,
    }
    print(f"Qwen-Image transformer{' (tiny, CPU)' if args.tiny else ''}: {params_b:.2f} B params on "
          f"{fig['gpu'] or device} ({fig.get('pci_bus_id') or '-'}), {fig['dtype']}, {w}x{h}, "
          f"{n_img} image + {n_txt} text tokens")
    print(f"  FLOPs per CFG step (2 forwards): {2 * per_forward / 1e12:.1f} TFLOP; "
          f"floor at {args.peak_tflops:.0f} TFLOP/s: {fig['floor_s_per_step_at_reference']:.3f} s")
    print(f"  dense {fig['dtype']} GEMM measured now: {gemm:.1f} TFLOP/s (baseline)")
    for label, cases_out in results.items():
        if "error" in cases_out:
            print(f"  [{label}] failed: {cases_out['error']}")
            continue
        for name, r in cases_out.items():
            print(f"  [{label}] {name:20s} {r['s_per_step_median']:.4f} s/step (best {r['s_per_step_best']:.4f}), "
                  f"{r['tflops_median']:.1f} TFLOP/s = {r['tflops_median'] / gemm:.2f} of the GEMM baseline, "
                  f"{r['tflops_median'] / args.peak_tflops:.2f} of {args.peak_tflops:.0f}")
    if device == "cpu":
        print("  (CPU run of a tiny config: checks that the script works; the figures mean nothing)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(fig, indent=1))
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
