"""Mask R-CNN on DetNet-59 + FPN (Li et al., ECCV 2018, Sec. 4): the pyramid P2..P6 comes from stages
2-6 (P4..P6 all at stride 16, no pooled extra level), RoIs go to P2..P5 by FPN eq. 1 with P5 at
stride 16, the model fits a tiny batch, and its full-size parameter count."""
from __future__ import annotations

import math

import pytest
import torch

import seglab
from seglab.errors import SeglabError
from seglab.layers import MultiScaleRoIAlign
from seglab.layers.roi_align import map_rois_to_fpn_levels

from models.test_mask_rcnn import TINY, shapes_batch  # noqa: E402  (tests/ is on pytest's path)


def _tiny(**kw):
    torch.manual_seed(0)
    return seglab.create_model("mask_rcnn_detnet59_fpn", num_classes=3, **{**TINY, **kw})


def test_pyramid_from_stages_2_to_6_at_strides_4_8_16_16_16():
    model = _tiny().eval()
    assert model.fpn.strides == [4, 8, 16, 16, 16] and not model.fpn.extra_pool
    with torch.no_grad():
        _, _, pyramid = model.extract_features(torch.randn(1, 3, 97, 131))
    padded = (128, 160)  # images are padded to a multiple of 32
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(math.ceil(padded[0] / s), math.ceil(padded[1] / s))
                                                      for s in (4, 8, 16, 16, 16)]


def test_rois_go_to_p2_to_p5_with_p5_at_stride_16():
    """Four levels (strides 4, 8, 16, 16) filled with their level number: a box of FPN level k is
    pooled from the k-th map, so the largest boxes read P5 although it shares P4's stride."""
    image = (512, 512)
    levels = [torch.full((1, 1, 512 // s, 512 // s), float(k)) for k, s in zip((2, 3, 4, 5), (4, 8, 16, 16))]
    boxes = torch.tensor([[0.0, 0, 60, 60], [0, 0, 120, 120], [0, 0, 300, 300], [0, 0, 500, 500]])
    expected = map_rois_to_fpn_levels(boxes, 2, 5) + 2
    assert expected.tolist() == [2, 3, 4, 5]  # floor(4 + log2(sqrt(wh) / 224))
    pooled = MultiScaleRoIAlign(None, 2, 2)(levels, [boxes], [image])
    assert pooled.flatten(1).mean(1).tolist() == expected.float().tolist()


def test_fits_a_tiny_batch():
    model = _tiny().train()
    images, targets = shapes_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:2]) / 2, history


def test_entrypoint_errors_and_full_size_count():
    with pytest.raises(SeglabError, match="output_stride"):
        _tiny(output_stride=32)
    with pytest.raises(SeglabError, match="aux_loss"):
        _tiny(aux_loss=True)
    with torch.device("meta"):
        model = seglab.create_model("mask_rcnn_detnet59_fpn", num_classes=21)
        resnet = seglab.create_model("mask_rcnn_resnet50_fpn", num_classes=21)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Same RPN and RoI heads as on ResNet-50; the FPN gets one more lateral (1x1) + output (3x3) pair and
    # its C5/C6 laterals read 1024 channels instead of 2048.
    assert count(model.backbone) == 17_347_648
    assert count(model.fpn) == 5 * (256 * 256 * 9 + 256) + (256 + 512 + 3 * 1024) * 256 + 5 * 256
    assert count(model) - count(model.backbone) - count(model.fpn) == \
        count(resnet) - count(resnet.backbone) - count(resnet.fpn)
    assert count(model) == 38_513_107
