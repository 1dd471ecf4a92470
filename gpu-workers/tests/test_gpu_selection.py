"""Which GPUs the worker starts processes for: CUDA_VISIBLE_DEVICES (set by Slurm, Kubernetes device plugins or
the user) decides what this process may use; nvidia-smi lists every GPU of the machine regardless of it."""

from __future__ import annotations

import pytest

from atelier_gpu import worker


def _gpus(monkeypatch, visible: str | None, gpus: str | None = None, smi_count: int = 8) -> list[str]:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.delenv("ATELIER_GPU_CHILD", raising=False)
    # nvidia-smi is absent on this machine; the machine it stands for has 8 GPUs
    monkeypatch.setattr(worker, "_nvidia_smi_gpu_count", lambda: smi_count)
    args = worker.build_parser().parse_args(["--model", "m", *(["--gpus", gpus] if gpus else [])])
    return worker._gpu_list(args)


def test_visible_devices_decide_the_default_gpus(monkeypatch):
    assert _gpus(monkeypatch, "2,3") == ["2", "3"]
    assert _gpus(monkeypatch, "GPU-aaaa, GPU-bbbb") == ["GPU-aaaa", "GPU-bbbb"]
    assert _gpus(monkeypatch, None) == [str(i) for i in range(8)]
    assert _gpus(monkeypatch, None, smi_count=0) == ["cpu"]


def test_hidden_gpus_mean_cpu(monkeypatch):
    # CUDA stops at the first invalid id: "" and "-1" hide every GPU
    assert _gpus(monkeypatch, "") == ["cpu"]
    assert _gpus(monkeypatch, "-1") == ["cpu"]
    assert _gpus(monkeypatch, "1,-1,2") == ["1"]


def test_gpus_flag_indexes_the_visible_devices(monkeypatch):
    # --gpus counts like torch's cuda:N: positions among the visible devices
    assert _gpus(monkeypatch, "4,5,6", gpus="0,2") == ["4", "6"]
    assert _gpus(monkeypatch, None, gpus="0,2") == ["0", "2"]
    with pytest.raises(SystemExit, match=r"--gpus 3: CUDA_VISIBLE_DEVICES=4,5,6 makes 3 GPUs visible \(0-2\)"):
        _gpus(monkeypatch, "4,5,6", gpus="1,3")


def test_a_supervisors_child_keeps_its_device(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6")
    monkeypatch.setenv("ATELIER_GPU_CHILD", "1")
    args = worker.build_parser().parse_args(["--model", "m", "--gpus", "6"])
    assert worker._gpu_list(args) == ["6"]


def test_default_slots_cover_every_stage_a_row_holds_a_slot_through():
    # one full batch per stage: on the GPU, queued behind it, encoding, decoding (the old 2 x B + 1 left the
    # GPU without a ready batch while the previous one encoded)
    for batch in (1, 2, 8):
        assert worker.default_max_concurrent(batch) == len(worker.ROW_STAGES) * batch
    assert worker.default_max_concurrent(1) > 2 * 1 + 1
