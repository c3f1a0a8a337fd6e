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

import argparse
import json
import time

import torch
from speed import cpu_name

import seglab
from seglab.config import load_config
from seglab.engine import build_datasets
from seglab.metrics.proposals import average_recall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--checkpoint", required=True, help="a model saved by seglab train (best.safetensors)")
    p.add_argument("--post-nms-top-n", type=int, default=1000, help="proposals kept per image (default 1000)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    _, val = build_datasets(cfg, train=False)
    model = seglab.load_model(args.checkpoint).eval()
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
