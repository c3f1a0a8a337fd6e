"""Where Mask R-CNN's inference time goes, and whether RoIAlign is the bottleneck.

Full-size `mask_rcnn_resnet50_fpn` (COCO's 90 + 1 classes, random weights, eval mode) on one image of
--size (default 800x1216, COCO's test scale padded to a multiple of 32) with the RPN keeping
--proposals boxes (1000, torchvision's test setting). Stages are timed on their own, with the same
inputs as inside the model: trunk + FPN, RPN, the box branch's RoIAlign over all proposals (7x7 on
P2..P5, 256 channels), the rest of the RoI heads (box head, NMS, mask RoIAlign + mask head on the
detections), and mask pasting. Untrained box scores would keep few detections, so the RoI heads' score
threshold is set to 0 and detections_per_img to 100: the mask branch runs on 100 boxes, as on a busy
COCO image. Prints one JSON line per stage (median of --runs, ms, share of the whole) and the total.

    python benchmarks/mask_rcnn_inference.py                 # 2 threads
    python benchmarks/mask_rcnn_inference.py --size 512 512 --runs 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from speed import cpu_name

import seglab


def median_ms(fn, runs: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(800, 1216))
    p.add_argument("--proposals", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = seglab.create_model("mask_rcnn_resnet50_fpn", num_classes=90, rpn_post_nms_top_n_test=args.proposals,
                                rpn_pre_nms_top_n_test=args.proposals, box_score_thresh=0.0).eval()
    image = torch.randn(1, 3, *args.size)
    heads = model.roi_heads
    with torch.no_grad():
        t_total, _ = median_ms(lambda: model(image), args.runs)
        t_features, (batch, sizes, pyramid) = median_ms(lambda: model.extract_features(image), args.runs)
        t_rpn, (proposals, _) = median_ms(lambda: model.rpn(pyramid, sizes), args.runs)
        levels = pyramid[:model.roi_levels]
        t_box_pool, _ = median_ms(lambda: heads.box_roi_pool(levels, proposals, sizes), args.runs)
        t_heads, (detections, _) = median_ms(lambda: heads(levels, proposals, sizes), args.runs)
        t_paste, _ = median_ms(lambda: model.postprocess(detections, sizes), args.runs)
    boxes = int(proposals[0].shape[0])
    dets = int(detections[0]["boxes"].shape[0])
    t_mask_pool, _ = median_ms(lambda: heads.mask_roi_pool(levels, [detections[0]["boxes"]], sizes), args.runs)
    common = {"machine": cpu_name(), "threads": args.threads, "size": list(args.size), "proposals": boxes,
              "detections": dets}
    stages = {"trunk_fpn": t_features, "rpn": t_rpn, "box_roi_align": t_box_pool,
              "roi_heads_rest": t_heads - t_box_pool - t_mask_pool, "mask_roi_align": t_mask_pool,
              "paste_masks": t_paste}
    for name, ms in stages.items():
        print(json.dumps({**common, "stage": name, "ms": round(ms, 1), "share": round(ms / t_total, 3)}))
    print(json.dumps({**common, "stage": "total (model forward)", "ms": round(t_total, 1),
                      "sum_of_stages_ms": round(sum(stages.values()), 1)}))


if __name__ == "__main__":
    main()
