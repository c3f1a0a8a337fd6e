"""Where MNC's boxes stand: the RPN's box deltas and its proposals against the validation objects.

For each validation image: the mean |delta| of the RPN's (dx, dy, dw, dh) over every anchor, and per
object the IoU of the best anchor, of the box decoded at that anchor, and of the best proposal kept
after NMS. A healthy RPN decodes boxes at least as good as its anchors; one whose deltas drifted (the
bug of docs/instance.md's MNC section: background RoIs moving their boxes) decodes far worse.

Prints one JSON line {"model", "checkpoint", "images", "objects", "mean_abs_delta" [dx, dy, dw, dh],
"mean_best_anchor_iou", "mean_decoded_iou_at_best_anchor", "mean_best_proposal_iou", "proposals_per_image"}.

    python benchmarks/mnc_proposals.py configs/synthetic/mnc.yaml data.root=data/synthetic \\
        --checkpoint runs/synthetic_mnc/best.safetensors
"""
from __future__ import annotations

import json

import torch
from trained_checkpoint import checkpoint_parser, load_checkpoint_and_val

from seglab.heads.instance.rpn import flatten_levels
from seglab.layers import box_iou
from seglab.layers.image_batch import batch_images
from seglab.models.mnc import STRIDE


@torch.no_grad()
def main() -> None:
    p = checkpoint_parser(__doc__, "an MNC model saved by seglab train (best.safetensors)")
    p.add_argument("--images", type=int, default=10, help="validation images to look at (default 10)")
    args = p.parse_args()
    cfg, model, val = load_checkpoint_and_val(args)
    rpn = model.rpn
    deltas_seen, anchor_iou, decoded_iou, proposal_iou, kept = [], [], [], [], []
    for i in range(min(args.images, len(val))):
        image, target = val[i]
        gt = torch.as_tensor(target["boxes"]).float()
        batch, sizes = batch_images([image], STRIDE)
        feature = model.backbone(batch)[-2]
        _, deltas = rpn.head([feature])
        grid = [tuple(feature.shape[-2:])]
        anchors = torch.cat(rpn.anchor_generator.grid_anchors(grid, rpn.level_strides(grid, sizes), torch.float32,
                                                              feature.device))
        deltas = flatten_levels(deltas, 4).float()[0]
        decoded = rpn.box_coder.decode_single(deltas, anchors)
        proposals, _ = rpn([feature], sizes)
        deltas_seen.append(deltas.abs().mean(0))
        kept.append(len(proposals[0]))
        if len(gt):
            best_anchor = box_iou(gt, anchors).max(1)
            anchor_iou.append(best_anchor.values)
            decoded_iou.append(box_iou(gt, decoded)[torch.arange(len(gt)), best_anchor.indices])
            proposal_iou.append(box_iou(gt, proposals[0]).max(1).values if len(proposals[0]) else torch.zeros(len(gt)))
    mean = lambda xs: round(float(torch.cat(xs).mean()), 3)
    print(json.dumps({"model": cfg.model.name, "checkpoint": args.checkpoint, "images": len(kept),
                      "objects": sum(len(x) for x in anchor_iou),
                      "mean_abs_delta": [round(float(v), 3) for v in torch.stack(deltas_seen).mean(0)],
                      "mean_best_anchor_iou": mean(anchor_iou), "mean_decoded_iou_at_best_anchor": mean(decoded_iou),
                      "mean_best_proposal_iou": mean(proposal_iou),
                      "proposals_per_image": round(sum(kept) / len(kept), 1)}))


if __name__ == "__main__":
    main()
