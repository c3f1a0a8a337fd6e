"""InstanceFCN's segment proposals scored as its paper does (Dai et al., ECCV 2016, Sec. 5): average
recall AR@10 / AR@100 / AR@1000 of the class-agnostic proposals (`InstanceFCN.propose`, all scales, NMS
0.8, best first) against the validation instances (mask IoU, thresholds 0.5:0.05:0.95;
`seglab.metrics.proposals.average_recall`).

Prints one JSON line {"model", "checkpoint", "images", "instances", "AR@10", "AR@100", "AR@1000",
"seconds_per_image", "machine"}.

    python benchmarks/instance_fcn_proposals.py configs/synthetic/instance_fcn.yaml \\
        --checkpoint runs/synthetic_instance_fcn/best.safetensors
"""
from __future__ import annotations

import json
import time

import torch
from speed import cpu_name
from trained_checkpoint import checkpoint_parser, load_checkpoint_and_val

from seglab.metrics.proposals import average_recall


def main() -> None:
    p = checkpoint_parser(__doc__, "a model saved by seglab train (best.safetensors)")
    p.add_argument("--post-nms-top-n", type=int, default=1000, help="proposals kept per image (default 1000)")
    args = p.parse_args()
    cfg, model, val = load_checkpoint_and_val(args)
    model.post_nms_top_n = max(model.pre_nms_top_n, args.post_nms_top_n)
    model.pre_nms_top_n = max(model.pre_nms_top_n, args.post_nms_top_n)
    proposals, ground_truth = [], []
    start = time.perf_counter()
    for i in range(len(val)):
        image, target = val[i]
        keep = ~torch.as_tensor(target.get("iscrowd", torch.zeros(len(target["labels"])))).bool()
        proposals.append(model.propose([image])[0]["masks"])
        ground_truth.append(torch.as_tensor(target["masks"]).bool()[keep])
    seconds = (time.perf_counter() - start) / max(len(val), 1)
    ar = average_recall(proposals, ground_truth, (10, 100, 1000))
    print(json.dumps({"model": cfg.model.name, "checkpoint": args.checkpoint, "images": len(val),
                      "instances": sum(len(g) for g in ground_truth), **{k: round(v, 4) for k, v in ar.items()},
                      "seconds_per_image": round(seconds, 3),
                      "machine": {"cpu": cpu_name(), "torch_threads": torch.get_num_threads()}}))


if __name__ == "__main__":
    main()
