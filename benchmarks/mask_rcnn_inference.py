"""Where Mask R-CNN's inference time goes, before and after issue 20, and what bf16 changes.

Full-size `mask_rcnn_resnet50_fpn` (COCO's 90 + 1 classes, random weights, eval mode) on one image of
--size (default 800x1216, COCO's test scale padded to a multiple of 32) with the RPN keeping
--proposals boxes (1000, torchvision's test setting). Untrained box scores would keep few detections,
so the RoI heads' score threshold is set to 0 and detections_per_img to 100: the mask branch runs on
100 boxes, as on a busy COCO image.

Three variants of the same weights, timed in turns (`best_of_interleaved`: the minimum of --runs
rounds, so that all see the same machine load):
- `v0`: the forward as it was (`forward_v0` below, kept as the reference): NCHW weights, all 91 mask
  maps computed and one kept, the dense float (K, H, W) paste then thresholded;
- `fp32`: `seglab.inference.instances.InstancePredictor(model, precision="fp32").predict_tensor`, the path
  of `seglab predict` / `seglab eval`: channels-last weights (`inference_layout`), only each detection's
  class map, box-by-box thresholded paste, results as float32 on the CPU;
- `bf16`: the same predictor at precision "bf16" (`--precision bf16`):
  convolutions and linear layers in bf16, anchors, boxes, scores and NMS in float32.
For fp32 and bf16 the stages are also timed on their own, with the same inputs as inside the model:
trunk + FPN, RPN, the box branch's RoIAlign over all proposals, the rest of the RoI heads (box head,
NMS, mask RoIAlign + mask head on the detections), and mask pasting. Agreement: fp32 and v0 must give
the same detections up to float rounding (largest box and score difference, mask pixels that differ);
for bf16 against fp32, the share of fp32 detections with a bf16 detection of the same label at box
IoU >= 0.9 (with random weights the 100 kept boxes are near-ties in score, so this measures bf16's
rounding on an untrained model, not on a trained one).

    python benchmarks/mask_rcnn_inference.py                 # 2 threads
    python benchmarks/mask_rcnn_inference.py --size 512 512 --runs 2
"""
from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from speed import best_of_interleaved, cpu_name

import seglab
from seglab.inference.instances import InstancePredictor, float_result, inference_layout
from seglab.layers import box_iou, paste_masks_in_image
from seglab.structures import InstanceResult


@torch.no_grad()
def forward_v0(model, image: torch.Tensor) -> list[InstanceResult]:
    """Mask R-CNN inference as before issue 20 (the model must have NCHW weights)."""
    batch, sizes, pyramid = model.extract_features(image)
    proposals, _ = model.rpn(pyramid, sizes)
    heads, levels = model.roi_heads, pyramid[:model.roi_levels]
    proposals = [p.float() for p in proposals]
    class_logits, box_regression = heads.box_forward(levels, proposals, sizes)
    detections = heads.postprocess_detections(class_logits, box_regression, proposals, sizes)
    logits = heads.mask_forward(levels, [d["boxes"] for d in detections], sizes)  # all C + 1 maps
    results = []
    for d, lg, size in zip(detections, logits.split([len(d["boxes"]) for d in detections]), sizes):
        probs = lg[torch.arange(len(d["labels"])), d["labels"]].float().sigmoid()
        masks = paste_masks_in_image(probs, d["boxes"], size) >= model.mask_threshold  # dense float paste
        results.append(InstanceResult(boxes=d["boxes"], scores=d["scores"], labels=d["labels"] - 1, masks=masks))
    return results


@torch.no_grad()
def stages(model, image: torch.Tensor, bf16: bool, runs: int) -> dict:
    """Seconds per stage (minimum over runs), inputs as inside the model."""
    heads = model.roi_heads
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        batch, sizes, pyramid = model.extract_features(image)
        proposals, _ = model.rpn(pyramid, sizes)
        levels = pyramid[:model.roi_levels]
        detections, _ = heads(levels, proposals, sizes)
        boxes = [detections[0]["boxes"]]
        t = best_of_interleaved({
            "trunk_fpn": lambda: model.extract_features(image),
            "rpn": lambda: model.rpn(pyramid, sizes),
            "box_roi_align": lambda: heads.box_roi_pool(levels, [p.float() for p in proposals], sizes),
            "roi_heads": lambda: heads(levels, proposals, sizes),
            "mask_roi_align": lambda: heads.mask_roi_pool(levels, boxes, sizes),
            "paste_masks": lambda: model.postprocess(detections, sizes),
        }, runs)
    t["roi_heads_rest"] = t.pop("roi_heads") - t["box_roi_align"] - t["mask_roi_align"]
    return t, detections


def agreement(a: InstanceResult, b: InstanceResult) -> dict:
    """How far detections b are from a: the share of a's detections that b has too (same label, box IoU
    >= 0.9), and when both list the same labels in the same order, the largest box / score difference
    and the mask pixels that differ between corresponding detections."""
    iou = box_iou(a.boxes, b.boxes.float()) * (a.labels[:, None] == b.labels[None, :])
    best = iou.max(1).values if iou.numel() else torch.zeros(len(a.boxes))
    out = {"matched_at_iou_0.9": round((best >= 0.9).float().mean().item(), 3)}
    if a.boxes.shape == b.boxes.shape and torch.equal(a.labels, b.labels):
        out.update(max_box_diff_px=(a.boxes - b.boxes.float()).abs().max().item(),
                   max_score_diff=(a.scores - b.scores.float()).abs().max().item(),
                   mask_pixels_differing=int((a.masks ^ b.masks).sum()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(800, 1216))
    p.add_argument("--proposals", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kwargs = dict(num_classes=90, rpn_post_nms_top_n_test=args.proposals, rpn_pre_nms_top_n_test=args.proposals,
                  box_score_thresh=0.0)
    old = seglab.create_model("mask_rcnn_resnet50_fpn", **kwargs).eval()
    new = inference_layout(seglab.create_model("mask_rcnn_resnet50_fpn", **kwargs).eval())
    new.load_state_dict(old.state_dict())
    image = torch.randn(1, 3, *args.size)

    predictors = {"fp32": InstancePredictor(new, precision="fp32"), "bf16": InstancePredictor(new, precision="bf16")}
    totals = best_of_interleaved({"v0": lambda: forward_v0(old, image),
                                  **{k: partial(p.predict_tensor, image[0]) for k, p in predictors.items()}},
                                 args.runs)
    results = {"v0": float_result(forward_v0(old, image)[0]),
               **{k: p.predict_tensor(image[0]) for k, p in predictors.items()}}
    common = {"machine": cpu_name(), "threads": args.threads, "torch": torch.__version__, "size": list(args.size),
              "proposals": args.proposals, "detections": int(results["fp32"].boxes.shape[0])}
    for variant in ("fp32", "bf16"):
        times, _ = stages(new, image, variant == "bf16", args.runs)
        for name, sec in times.items():
            print(json.dumps({**common, "variant": variant, "stage": name, "ms": round(1000 * sec, 1),
                              "share": round(sec / totals[variant], 3)}), flush=True)
    for variant in ("v0", "fp32", "bf16"):
        against = {"v0": None, "fp32": "v0", "bf16": "fp32"}[variant]
        print(json.dumps({**common, "variant": variant, "stage": "total (model forward)",
                          "ms": round(1000 * totals[variant], 1),
                          "speedup_vs_v0": round(totals["v0"] / totals[variant], 2),
                          "agreement": None if against is None else {
                              "against": against, **agreement(results[against], results[variant])}}), flush=True)


if __name__ == "__main__":
    main()
