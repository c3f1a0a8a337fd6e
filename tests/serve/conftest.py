"""Fixtures of the `seglab serve` tests: skipped as a whole, with the reason, without the serve extra."""
import pytest

for module in ("starlette", "uvicorn", "python_multipart"):
    pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[serve]' to test seglab serve")

from serve_helpers import save_tiny_model  # noqa: E402

TINY_SEMANTIC = {"width_mult": 0.125, "head_channels": 16, "aux_channels": 8}


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A tiny BiSeNet V2 (4 classes) whose file stores a prediction setting (flip TTA), as `seglab pack` does,
    and the size of its training images (so photos are resized to a short side of 32, as `seglab predict`
    does: the 48x64 test photos go through the resize-and-back path)."""
    return save_tiny_model(tmp_path_factory.mktemp("serve_models") / "tiny.safetensors", "bisenetv2",
                           num_classes=4, classes=["sky", "road", "tree", "car"],
                           inference={"tta": {"flip": True, "scales": [1.0]}}, train_size=[32, 40], **TINY_SEMANTIC)
