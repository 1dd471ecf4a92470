"""A local GPU output is written through descriptors pinned below the run's output dir (issue 23).

The orchestrator hands a local worker `<output dir>/.atelier/staging/<row>/<name>` after checking the
path. A folder on the way swapped for a link between that check and the write must not take the PNG
(or its temp file) outside the output dir: each folder below the output dir is opened O_NOFOLLOW
relative to the one above (openat-style), as storage/pinnedDir.ts does for the TS local backend.
"""

from __future__ import annotations

import os
import threading

import pytest
from PIL import Image

from atelier_gpu.images import OutputStoreError, write_png_atomic

IMAGE = Image.new("RGB", (4, 4), (1, 2, 3))


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_writes_a_staged_output_under_the_output_dir(tmp_path):
    out = tmp_path / "out"
    path = out / ".atelier" / "staging" / "000000" / "out_0.0123456789ab.png"
    written = write_png_atomic(IMAGE, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.size == path.stat().st_size
    assert _files(out) == [".atelier/staging/000000/out_0.0123456789ab.png"]  # no temp file left


@pytest.mark.parametrize("swapped", ["000000", "staging", ".atelier"])
def test_a_folder_swapped_for_a_link_is_refused_not_followed(tmp_path, swapped):
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    row = out / ".atelier" / "staging" / "000000"
    row.mkdir(parents=True)
    # The folder on the way is now a link leading out of the output dir.
    target = {"000000": row, "staging": row.parent, ".atelier": row.parent.parent}[swapped]
    target.rename(tmp_path / "moved")
    target.symlink_to(outside, target_is_directory=True)
    if swapped != "000000":
        (outside / ("000000" if swapped == "staging" else "staging/000000")).mkdir(parents=True)
    refused = rf"refused: .*{swapped} is not a folder \(a link, or swapped for one\)"
    with pytest.raises(OutputStoreError, match=refused):
        write_png_atomic(IMAGE, str(row / "out_0.0123456789ab.png"))
    assert _files(outside) == []


def test_a_link_swapped_in_and_out_during_writes_never_takes_a_file_outside(tmp_path):
    # The loop: a folder and a link exchanged while the worker writes; every write either
    # lands under the output dir or is refused, and nothing (image or temp file) lands outside.
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    staging = out / ".atelier" / "staging"
    row = staging / "000000"
    row.mkdir(parents=True)
    real = staging / "real"
    link = staging / "link"
    os.symlink(outside, link, target_is_directory=True)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            try:
                os.rename(row, real)
                os.rename(link, row)
                os.rename(row, link)
                os.rename(real, row)
            except OSError:
                pass

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    written = refused = 0
    try:
        for i in range(300):
            try:
                write_png_atomic(IMAGE, str(row / f"out_{i}.0123456789ab.png"))
                written += 1
            except OutputStoreError:
                refused += 1
    finally:
        stop.set()
        swapper.join(5)
    assert _files(outside) == []
    assert written + refused == 300
