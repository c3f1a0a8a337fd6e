"""Joint transforms: crop size, ignore padding, nearest label resampling, eval size, normalisation."""
import pickle

import numpy as np
import pytest
import torch

from seglab.data import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalize_image
from seglab.errors import SeglabError


def _blocky(h, w, values=(0, 3, 7, 255)):
    """A label map of 4x4 blocks with a few values, and a random image."""
    rng = np.random.default_rng(1)
    mask = rng.choice(values, size=(h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mask.astype(np.int64)


@pytest.mark.parametrize("size", [(40, 56), (13, 9), (200, 150)])
def test_train_crop_size_and_nearest(size):
    image, mask = _blocky(*size)
    t = TrainTransform(crop_size=(32, 48), scale_range=(0.5, 2.0))
    for _ in range(8):
        img, m = t(image, mask)
        assert img.shape == (3, 32, 48) and img.dtype == torch.float32
        assert m.shape == (32, 48) and m.dtype == torch.int64
        assert set(torch.unique(m).tolist()) <= {0, 3, 7, 255}  # nearest: no new values


def test_padding_is_ignore_and_mean():
    image = np.full((20, 24, 3), 10, np.uint8)
    mask = np.ones((20, 24), np.int64)
    t = TrainTransform(crop_size=(32, 40), scale_range=(1.0, 1.0), hflip=False, color_jitter=0)
    img, m = t(image, mask)
    assert (m[:20, :24] == 1).all()
    assert (m[20:] == 255).all() and (m[:, 24:] == 255).all()
    # the padded image area holds the mean colour, so it normalises to ~0
    assert img[:, 20:, :].abs().max() < 0.02 and img[:, :, 24:].abs().max() < 0.02
    expected = (10 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(img[:, 0, 0], expected, atol=1e-6)


def test_custom_ignore_index_padding():
    t = TrainTransform(crop_size=(8, 8), scale_range=(1.0, 1.0), hflip=False, color_jitter=0, ignore_index=254)
    _, m = t(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64))
    assert (m[4:] == 254).all()


def test_eval_keeps_size_and_normalises():
    image = np.zeros((7, 5, 3), np.uint8)
    image[2, 3] = (255, 128, 0)
    mask = np.arange(35).reshape(7, 5)
    img, m = EvalTransform()(image, mask)
    assert img.shape == (3, 7, 5) and torch.equal(m, torch.from_numpy(mask))
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    assert torch.allclose(img[:, 2, 3], torch.tensor(expected), atol=1e-6)
    assert torch.allclose(normalize_image(image)[:, 2, 3], torch.tensor(expected), atol=1e-6)


def test_in_channels_need_matching_mean_std():
    gray = np.full((6, 6, 1), 51, np.uint8)
    with pytest.raises(SeglabError, match="image has 1 channels but mean/std have 3 values"):
        EvalTransform()(gray, np.zeros((6, 6), np.int64))
    with pytest.raises(SeglabError, match="same length"):
        TrainTransform(crop_size=4, mean=(0.5,), std=(0.5, 0.5))
    img, m = TrainTransform(crop_size=(4, 4), mean=(0.2,), std=(0.5,))(gray, np.zeros((6, 6), np.int64))
    assert img.shape == (1, 4, 4) and m.shape == (4, 4)
    img, none = EvalTransform(mean=(0.2,), std=(0.5,))(gray)
    assert none is None
    assert torch.allclose(img, torch.full((1, 6, 6), (0.2 - 0.2) / 0.5), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(SeglabError, match="crop_size"):
        TrainTransform(crop_size=(0, 4))
    with pytest.raises(SeglabError, match="scale_range"):
        TrainTransform(scale_range=(2.0, 0.5))
    with pytest.raises(SeglabError, match="color_jitter"):
        TrainTransform(color_jitter=-1)


def test_picklable_and_seeded():
    image, mask = _blocky(64, 64)
    t = TrainTransform(crop_size=(32, 32))
    t(image, mask)  # builds the pipeline; pickling must drop it
    clone = pickle.loads(pickle.dumps(t))
    torch.manual_seed(5)
    a = [t(image, mask)[1] for _ in range(3)]
    torch.manual_seed(5)
    b = [clone(image, mask)[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(a[0], x) for x in a[1:])  # the state advances between calls


def test_set_random_seed_restarts_the_stream():
    image, mask = _blocky(64, 64)
    t = TrainTransform(crop_size=(24, 24))
    t.set_random_seed(11)
    a = [t(image, mask)[1] for _ in range(3)]
    torch.manual_seed(123)  # an explicit seed wins over torch's
    t.set_random_seed(11)
    b = [t(image, mask)[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    t.set_random_seed(12)
    assert not all(torch.equal(x, t(image, mask)[1]) for x in a)


def test_photometric_gamma_blur_noise_change_pixels_only_and_repeat_with_the_seed():
    from seglab.data.instances import InstanceTrainTransform
    from seglab.data.transforms import Photometric

    image, mask = _blocky(32, 40)
    image[:] = 128  # flat grey: blur alone changes nothing, gamma and noise do
    plain = TrainTransform(crop_size=(32, 40), scale_range=(1.0, 1.0), hflip=False, color_jitter=0)
    heavy = TrainTransform(crop_size=(32, 40), scale_range=(1.0, 1.0), hflip=False, color_jitter=0,
                           gamma=0.5, blur_prob=1.0, noise_std=0.1)
    heavy.set_random_seed(3)
    a, ma = heavy(image, mask)
    heavy.set_random_seed(3)
    b, _ = heavy(image, mask)
    ref, mref = plain(image, mask)
    assert torch.equal(a, b) and torch.equal(ma, mref) and torch.equal(ma, torch.from_numpy(mask))
    assert (a - ref).abs().mean() > 0.05 and a.flatten(1).std(1).min() > 0.05  # noise and gamma applied
    assert ref.flatten(1).std(1).max() == 0
    assert not Photometric() and Photometric(noise_std=0.1)
    with pytest.raises(SeglabError, match=r"gamma must be in \[0, 0.9\]"):
        TrainTransform(gamma=1.5)
    # the instance transform draws from torch's generator; masks and boxes are untouched
    target = {"boxes": np.array([[0, 0, 4, 4]], np.float32), "labels": np.zeros(1, np.int64),
              "masks": np.pad(np.ones((1, 4, 4), bool), ((0, 0), (0, 28), (0, 36))), "iscrowd": np.zeros(1, bool)}
    t = InstanceTrainTransform(crop_size=None, scale_range=(1.0, 1.0), hflip=False, gamma=0.5, noise_std=0.1)
    torch.manual_seed(0)
    x1, t1 = t(image, target)
    torch.manual_seed(0)
    x2, _ = pickle.loads(pickle.dumps(t))(image, target)
    x3, _ = InstanceTrainTransform(crop_size=None, scale_range=(1.0, 1.0), hflip=False)(image, target)
    assert torch.equal(x1, x2) and (x1 - x3).abs().mean() > 0.05 and x3.flatten(1).std(1).max() == 0
    assert t1["boxes"].tolist() == [[0, 0, 4, 4]] and t1["masks"].sum() == 16
