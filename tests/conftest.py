import os
from pathlib import Path

# Threads that spin while waiting steal the other worker's core on a 2-core machine; set before torch
# loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# One thread per pytest-xdist worker (the workers already fill the cores), else up to two.
torch.set_num_threads(1 if "PYTEST_XDIST_WORKER" in os.environ else max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """`../shared` beside the checkout (present in the project's own workspace and CI, absent in a
    user's clone): tests that read it skip with this reason."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: reference data is only in the project workspace")
    return SHARED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic data set on disk (real PNG files), shared by the engine and CLI tests."""
    from seglab.data import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=12, num_val=4, size=(48, 64), seed=1)
    return root


@pytest.fixture
def folder_set(tmp_path) -> Path:
    """A 2-class `folder` data set, one train and one val pair (real PNG files)."""
    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((16, 20, 3), 120, np.uint8)).save(root / "img" / f"{name}.png")
        Image.fromarray((np.arange(16 * 20).reshape(16, 20) % 2).astype(np.uint8)).save(root / "lbl" / f"{name}.png")
    (root / "train.txt").write_text("img/a.png lbl/a.png\n")
    (root / "val.txt").write_text("img/b.png lbl/b.png\n")
    (root / "classes.txt").write_text("zero\none\n")
    return root
