"""A tiny instance-segmentation batch shared by the model tests: two 64x64 images, each with a rectangle
and a disc in distinct class colours on noise, and their targets (boxes, labels, masks, iscrowd)."""
from __future__ import annotations

import torch

from seglab.data.instances import masks_to_boxes


def two_object_scenes(size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """(images (2, 3, size, size), targets): classes (0, 1) in the first image and (2, 0) in the second."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, -1.0]])
    scenes = [((0, (6, 8, 30, 34)), (1, (44, 42, 12))), ((2, (30, 4, 58, 26)), (0, (18, 44, 13)))]
    images, targets = [], []
    for (rect_class, (y0, x0, y1, x1)), (disc_class, (cy, cx, r)) in scenes:
        masks = torch.stack([(yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1), (yy - cy) ** 2 + (xx - cx) ** 2 < r * r])
        image = 0.2 * torch.randn(3, size, size, generator=g)
        for m, c in zip(masks, (rect_class, disc_class)):
            image[:, m] += colours[c][:, None]
        images.append(image)
        targets.append({"boxes": masks_to_boxes(masks), "labels": torch.tensor([rect_class, disc_class]),
                        "masks": masks, "iscrowd": torch.zeros(2, dtype=torch.bool), "image_id": len(targets)})
    return torch.stack(images), targets


def objects_found(results, targets, top: int = 10, iou: float = 0.5) -> int:
    """How many ground-truth objects have, among each image's `top` first results, one of their class
    with mask IoU > `iou`."""
    found = 0
    for result, target in zip(results, targets):
        for gt_mask, gt_label in zip(target["masks"], target["labels"]):
            same = result.labels[:top] == gt_label
            if not bool(same.any()):
                continue
            inter = (result.masks[:top] & gt_mask).flatten(1).sum(1)
            union = (result.masks[:top] | gt_mask).flatten(1).sum(1).clamp(min=1)
            found += int(((inter / union) * same).max() > iou)
    return found


def fit(model, images, targets, *, steps: int, lr: float) -> list[list[float]]:
    """Adam steps on one batch in training mode; returns every step's loss values (in the dict's order)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append([v.item() for v in losses.values()])
    return history
