"""Shared fixtures: tiny random-weight pipelines built locally, input images, services. No Hub access."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # any stray Hub call fails at once instead of hanging
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TEST_AREA = 64 * 64  # --max-area used by the tests: tiny images keep CPU runs fast


class _TinyModels(dict):
    """{model_type: local dir}, each tiny pipeline built (saved with save_pretrained) on first use."""

    # folder names without a type hint in them, so detection must read model_index.json
    FOLDERS = {"instruct-pix2pix": "tiny-ip2p", "flux-kontext": "tiny-fk", "flux2-klein": "tiny-f2k",
               "flux2-klein-base": "tiny-f2kb", "flux2-klein-kv": "tiny-f2kv", "qwen": "tiny-qe",
               "qwen-plus": "tiny-qep", "longcat": "tiny-lc", "flux2": "tiny-f2", "joyimage-edit": "tiny-je",
               "joyimage-edit-plus": "tiny-jep", "chronoedit": "tiny-ce", "omnigen": "tiny-og",
               "qwen-image-2.1": "tiny-q21", "z-image-omni": "tiny-zo", "dreamlite": "tiny-dl",
               "dreamlite-mobile": "tiny-dlm", "bria-fibo-edit": "tiny-bfe", "bria-fibo-edit-turbo": "tiny-bfet",
               "longcat-turbo": "tiny-lct", "sdxl-instruct-pix2pix": "tiny-sxp", "kandinsky5-i2i": "tiny-k5"}

    def __init__(self, base: Path):
        super().__init__()
        self.base = base

    def __missing__(self, model_type: str) -> str:
        from tiny_pipelines import build_tiny

        self[model_type] = build_tiny(model_type, self.base / self.FOLDERS[model_type])
        return self[model_type]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """{model_type: local dir} for the tiny pipelines, built when a test first asks for one."""
    return _TinyModels(tmp_path_factory.mktemp("models"))


_PIPES: dict = {}


def load_tiny(tiny_models, model_type: str):
    """Load (once per session) through the production loading function."""
    from atelier_gpu.loading import LoadOptions, load_pipeline
    from atelier_gpu.models import get_adapter

    if model_type not in _PIPES:
        adapter = get_adapter(model_type, max_area=TEST_AREA)
        _PIPES[model_type] = load_pipeline(tiny_models[model_type], adapter, LoadOptions(device="cpu"))
    return _PIPES[model_type]


@pytest.fixture
def make_service(tiny_models):
    """make_service(model_type, batch_size=1, max_wait_s=..., pipe=None) -> EditService (engine started)."""
    from atelier_gpu.activity import EditService
    from atelier_gpu.engine import Engine
    from atelier_gpu.models import get_adapter

    made = []

    def make(model_type: str, batch_size: int = 1, max_wait_s: float = 0.05, pipe=None, **adapter_kw):
        adapter = get_adapter(model_type, max_area=TEST_AREA, **adapter_kw)
        engine = Engine(pipe if pipe is not None else load_tiny(tiny_models, model_type), adapter,
                        max_batch=batch_size, max_wait_s=max_wait_s).start()
        svc = EditService(engine, tiny_models[model_type], worker_id="test-worker", heartbeat_interval_s=0.05,
                          poll_s=0.02)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.engine.batcher.shutdown(wait=True, timeout=10)


@pytest.fixture
def images(tmp_path) -> dict[str, str]:
    """Absolute paths of a few input PNGs plus broken ones."""
    d = tmp_path / "in"
    d.mkdir()
    out = {}
    for name, size, color in [("red", (80, 60), (220, 30, 30)), ("green", (80, 60), (30, 200, 60)),
                              ("blue", (80, 60), (30, 60, 220)), ("square", (64, 64), (120, 120, 40))]:
        p = d / f"{name}.png"
        im = Image.new("RGB", size, color)
        for x in range(0, size[0], 8):  # some structure
            for y in range(0, size[1], 8):
                im.putpixel((x, y), (255, 255, 255))
        im.save(p)
        out[name] = str(p)
    corrupt = d / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    out["corrupt"] = str(corrupt)
    out["missing"] = str(d / "missing.png")
    return out


def request(model: str, model_type: str, inputs: list[str], output_path: str, **kw) -> dict:
    req = {
        "run_id": "run-test",
        "row_index": kw.pop("row_index", 0),
        "model": model,
        "model_type": model_type,
        "prompt": kw.pop("prompt", "make it blue"),
        "input_images": inputs,
        "output_path": output_path,
        "seed": kw.pop("seed", 1234),
        "params": kw.pop("params", {"num_inference_steps": 3}),
    }
    req.update(kw)
    return req


def temporal_cli_path() -> str | None:
    env = os.environ.get("TEMPORAL_CLI_PATH")
    if env and os.path.isfile(env):
        return env
    repo = ROOT.parent
    try:
        import json

        version = json.loads((repo / "package.json").read_text())["atelier"]["temporalCliVersion"]
        cand = repo / ".tools" / "temporal" / version / "temporal"
        if cand.is_file():
            return str(cand)
    except (OSError, KeyError, ValueError):
        pass
    tools = repo / ".tools" / "temporal"
    if tools.is_dir():
        for p in sorted(tools.glob("*/temporal"), reverse=True):
            return str(p)
    return shutil.which("temporal")


@pytest.fixture
def decode_barrier(monkeypatch):
    """decode_barrier(n): the next n activities all start decoding before any submits to the GPU thread
    (so concurrent rows deterministically meet in the micro-batcher)."""
    import threading

    import atelier_gpu.activity as act

    real = act.load_image

    def install(n: int):
        barrier = threading.Barrier(n, timeout=30)
        seen = set()

        def load(path):
            tid = threading.get_ident()
            if tid not in seen:
                seen.add(tid)
                barrier.wait()
            return real(path)

        monkeypatch.setattr(act, "load_image", load)

    return install
