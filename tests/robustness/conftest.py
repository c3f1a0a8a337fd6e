"""Shared pieces of the robustness suite: run the CLI in-process, check the one-line refusal, and
snapshot folders to prove that no input changed and no partial output was left.

Every hostile case asserts the same promise (docs/reliability.md): exit status 2, exactly one line on
stderr (`seglab: error: ...`) naming the file, key or value, no traceback, inputs unchanged, and no
half-written or temporary file in the output folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from seglab.cli import main

TINY_MODEL = {"name": "unet", "kwargs": {"base_channels": 4}}


@dataclass
class Run:
    status: int
    out: str
    err: str


def run_cli(*argv) -> Run:
    """`seglab ARGV...` in this process; stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own usage errors
            status = e.code
    return Run(status, out.getvalue(), err.getvalue())


def assert_refused(run: Run, *fragments: str) -> str:
    """Exit 2, one `seglab: error:` line containing every fragment, no traceback; returns the line."""
    err = run.err.strip()
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err[-3000:]
    lines = err.splitlines()
    assert run.status == 2, f"status {run.status}; stderr: {err[-2000:]}"
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {err[:2000]}"
    assert lines[0].startswith("seglab: error: "), lines[0]
    assert len(lines[0]) < 2100, f"{len(lines[0])} characters"
    for f in fragments:
        assert str(f) in lines[0], f"{f!r} not in: {lines[0]}"
    return lines[0]


def snapshot(*folders: Path) -> dict[str, tuple[int, str]]:
    """{path: (size, sha1)} of every file below the folders (to compare before / after)."""
    files = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                data = p.read_bytes()
                files[str(p)] = (len(data), hashlib.sha1(data).hexdigest())
    return files


def temp_files(folder: Path) -> list[Path]:
    """Temporary files of atomic writes left in `folder` (there must be none after a failure)."""
    return [p for p in Path(folder).rglob("*.tmp")] if Path(folder).exists() else []


def write_config(path: Path, data_root, out_dir, **sections) -> Path:
    cfg = {"model": dict(TINY_MODEL),
           "data": {"name": "synthetic", "root": str(data_root), "crop_size": [32, 32], "batch_size": 4},
           "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out_dir)}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A valid 6-class seglab model file (tiny U-Net, untrained) for the synthetic set."""
    import seglab
    from seglab.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE

    model = seglab.create_model("unet", num_classes=6, base_channels=4)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    return seglab.save_model(model, path, classes=list(SYNTHETIC_CLASSES),
                             palette=[list(c) for c in SYNTHETIC_PALETTE])


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


