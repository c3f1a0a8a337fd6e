import pytest
import torch
from torch import nn

from seglab.inference import Predictor
from seglab.inference.predictor import _window_starts


class PixelwiseModel(nn.Module):
    """A 1x1 conv: its prediction at a pixel does not depend on the window, so sliding == whole."""

    def __init__(self, shapes=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)
        self.shapes = shapes if shapes is not None else []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.conv(x)


def test_window_starts_cover_the_image_and_end_on_the_border():
    assert _window_starts(100, 40, 30) == [0, 30, 60]
    assert _window_starts(101, 40, 30) == [0, 30, 60, 61]
    assert _window_starts(30, 40, 30) == [0]


@pytest.mark.parametrize("blend", ["uniform", "gaussian"])
def test_sliding_window_equals_whole_image_for_a_pixelwise_model(blend):
    model = PixelwiseModel()
    x = torch.randn(2, 3, 97, 131)
    whole = Predictor(model).probabilities(x)
    slid = Predictor(model, slide=(40, 48), stride=(25, 30), blend=blend).probabilities(x)
    assert slid.shape == whole.shape == (2, 5, 97, 131)
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-6)


def test_sliding_window_only_feeds_window_sized_inputs():
    shapes = []
    model = PixelwiseModel(shapes)
    Predictor(model, slide=(32, 32), stride=(16, 16), window_batch=3).probabilities(torch.randn(1, 3, 100, 70))
    assert shapes and all(s[-2:] == (32, 32) and s[0] <= 3 for s in shapes)


def test_image_smaller_than_window_is_padded_and_cropped_back():
    model = PixelwiseModel()
    x = torch.randn(1, 3, 20, 25)
    out = Predictor(model, slide=(32, 32), stride=(16, 16)).probabilities(x)
    assert out.shape[-2:] == (20, 25)
    torch.testing.assert_close(out, Predictor(model).probabilities(x), rtol=1e-5, atol=1e-6)


def test_gaussian_blend_weights_window_centres_more():
    """With a model whose output depends on the window position, blending differs by method."""

    class PositionModel(nn.Module):
        def forward(self, x):
            n, _, h, w = x.shape
            yy = torch.linspace(-1, 1, h)[:, None].expand(h, w)
            return torch.stack([yy, -yy]).expand(n, 2, h, w) * 5

    x = torch.zeros(1, 3, 64, 64)
    uni = Predictor(PositionModel(), slide=(32, 32), stride=(16, 16), blend="uniform").probabilities(x)
    gau = Predictor(PositionModel(), slide=(32, 32), stride=(16, 16), blend="gaussian").probabilities(x)
    assert not torch.allclose(uni, gau)
    torch.testing.assert_close(gau.sum(1), torch.ones(1, 64, 64))
