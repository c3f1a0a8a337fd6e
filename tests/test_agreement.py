"""The shipped CamVid model predicts the same labels through `seglab predict`, `seglab.predict` and
`seglab eval` (its stored settings: flip TTA, the training scale; the same fast path), on real CamVid
validation images. Skipped without ../shared."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seglab
from seglab.cli import main

PICKS = [3, 40, 77]


@pytest.fixture
def camvid_subset(shared_dir, tmp_path):
    """A CamVid root holding three validation images and their label maps."""
    src = shared_dir / "data" / "camvid"
    lines = (src / "val.txt").read_text().split("\n")
    root = tmp_path / "camvid"
    picked = [lines[i].split() for i in PICKS]
    for image, label in picked:
        for rel in (image, label):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / rel, root / rel)
    (root / "val.txt").write_text("".join(f"{i} {l}\n" for i, l in picked))
    return root, [root / i for i, _ in picked], [root / l for _, l in picked]


def test_cli_python_and_eval_predict_the_same_labels(camvid_subset, tmp_path, capsys):
    from seglab.metrics import SemanticMetrics

    root, images, labels = camvid_subset
    assert main(["predict", "--model", "bisenetv2.camvid", str(root / "val"), "--out", str(tmp_path / "cli")]) == 0
    assert "images resized to short side 360" in capsys.readouterr().out  # the stored setting, said
    cli = [np.array(Image.open(tmp_path / "cli" / f"{p.stem}.png")) for p in images]
    python = [r.labels.numpy() for r in seglab.predict(images, model="bisenetv2.camvid")]
    for a, b in zip(cli, python):
        assert np.array_equal(a, b)
    config = str(Path(__file__).resolve().parents[1] / "configs" / "camvid" / "bisenetv2_trainval.yaml")
    assert main(["eval", config, f"data.root={root}", "--checkpoint", "bisenetv2.camvid", "--out",
                 str(tmp_path / "eval")]) == 0
    confusion = np.array(json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["confusion"])
    metrics = SemanticMetrics(11)
    for pred, label in zip(cli, labels):
        truth = np.array(Image.open(label)).astype(np.int64)
        truth[truth == 11] = 255  # void
        metrics.update(pred, truth)
    assert np.array_equal(metrics.confusion.numpy(), confusion)
