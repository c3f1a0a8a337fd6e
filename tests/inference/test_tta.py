"""Test-time augmentation (DeepLab's multi-scale / flipped inputs) and its CLI-style spec parser."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seglab.inference import Predictor, TTAPredictor, parse_tta_spec


class Pixelwise(nn.Module):
    """A 1x1 conv: flip-equivariant, so flip TTA changes nothing."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


class LeftRight(nn.Module):
    """A 1x3 conv with an asymmetric kernel and a horizontal ramp: not flip-equivariant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, (1, 3), padding=(0, 1))

    def forward(self, x):
        ramp = torch.linspace(-1, 1, x.shape[-1], device=x.device)
        return self.conv(x) + ramp


def test_flip_tta_equals_plain_prediction_for_a_flip_equivariant_model():
    model, x = Pixelwise(), torch.randn(2, 3, 17, 23)
    torch.testing.assert_close(TTAPredictor(Predictor(model), flip=True).probabilities(x),
                               Predictor(model).probabilities(x))


def test_no_augmentation_equals_plain_prediction():
    model, x = LeftRight(), torch.randn(2, 3, 17, 23)
    tta = TTAPredictor(Predictor(model), flip=False, scales=(1.0,))
    torch.testing.assert_close(tta.probabilities(x), Predictor(model).probabilities(x))
    assert torch.equal(tta.predict(x), Predictor(model).predict(x))


def test_flip_tta_is_the_average_of_the_two_passes():
    model, x = LeftRight(), torch.randn(2, 3, 17, 23)
    plain = Predictor(model).probabilities(x)
    flipped = Predictor(model).probabilities(x.flip(-1)).flip(-1)
    assert not torch.allclose(plain, flipped, atol=1e-3)                  # the model is not symmetric
    torch.testing.assert_close(TTAPredictor(model, flip=True).probabilities(x), (plain + flipped) / 2)


def test_multi_scale_output_has_input_size_and_averages_resized_passes():
    model, x = LeftRight(), torch.randn(1, 3, 21, 30)
    tta = TTAPredictor(Predictor(model), flip=False, scales=(0.5, 1.0, 1.5))
    out = tta.probabilities(x)
    assert out.shape == (1, 4, 21, 30)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 21, 30))
    expected = []
    for s in (0.5, 1.0, 1.5):
        size = (round(21 * s), round(30 * s))
        xs = x if s == 1.0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        p = Predictor(model).probabilities(xs)
        expected.append(F.interpolate(p, size=(21, 30), mode="bilinear", align_corners=False))
    torch.testing.assert_close(out, sum(expected) / 3)


def test_tta_composes_with_sliding_window():
    model, x = Pixelwise(), torch.randn(1, 3, 40, 52)
    slid = Predictor(model, slide=(24, 24), stride=(16, 16))
    out = TTAPredictor(slid, flip=True, scales=(0.75, 1.0)).probabilities(x)
    assert out.shape == (1, 4, 40, 52)
    torch.testing.assert_close(TTAPredictor(slid, flip=True).probabilities(x), Predictor(model).probabilities(x),
                               rtol=1e-5, atol=1e-6)


def test_predict_image_and_evaluate_interface():
    model = Pixelwise()
    tta = TTAPredictor(Predictor(model), flip=True, scales=(0.5, 1.0))
    image = np.random.default_rng(0).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    result = tta.predict_image(image, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert result.labels.shape == (11, 13) and result.probs.shape == (4, 11, 13)
    assert tta.predict(torch.randn(2, 3, 11, 13)).shape == (2, 11, 13)


def test_evaluate_accepts_a_tta_predictor():
    from seglab.engine import evaluate

    class Data:
        num_classes, ignore_index = 4, 255

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": torch.randn(3, 9, 10), "mask": torch.randint(0, 4, (9, 10))}

    model = Pixelwise()
    metrics = evaluate(model, Data(), num_classes=4, predictor=TTAPredictor(model, flip=True, scales=(1.0, 0.5)))
    assert int(metrics.confusion.sum()) == 2 * 9 * 10
    assert 0.0 <= metrics.compute()["mIoU"] <= 1.0


@pytest.mark.parametrize("text, expected", [
    ("flip,scales=0.75,1,1.25", {"flip": True, "scales": (0.75, 1.0, 1.25)}),
    ("scales=0.5,1.5,flip", {"flip": True, "scales": (0.5, 1.5)}),
    ("flip", {"flip": True, "scales": (1.0,)}),
    (" scales=1 ", {"flip": False, "scales": (1.0,)}),
    ("", {"flip": False, "scales": (1.0,)}),
    ("none", {"flip": False, "scales": (1.0,)}),
])
def test_parse_tta_spec(text, expected):
    assert parse_tta_spec(text) == expected


def test_parsed_spec_configures_a_tta_predictor():
    tta = TTAPredictor(Pixelwise(), **parse_tta_spec("flip,scales=0.5,1"))
    assert tta.flip is True and tta.scales == (0.5, 1.0)


@pytest.mark.parametrize("text, match", [
    ("flip,scale=1", "unknown item"),
    ("scales=0.5,x", "must be numbers"),
    ("scales=", "must be numbers"),
    ("scales=0,1", "positive"),
    ("scales=1,scales=2", "twice"),
    ("flop", "unknown item"),
])
def test_parse_tta_spec_rejects_bad_input(text, match):
    with pytest.raises(ValueError, match=match):
        parse_tta_spec(text)


def test_invalid_scales_raise():
    with pytest.raises(ValueError, match="scales"):
        TTAPredictor(Pixelwise(), scales=())
    with pytest.raises(ValueError, match="scales"):
        TTAPredictor(Pixelwise(), scales=(1.0, -0.5))
