"""The dense CRF's effect on CamVid val with a trained model: tune on the first N val images with
`crf_grid_search`, then report mIoU and accuracy near boundaries (trimap) on the remaining, held-out
images for the network alone, DeepLab's default CRF and the tuned CRF. One JSON line per setting.

    python benchmarks/crf_camvid.py --checkpoint runs/camvid_bisenetv2_halfres/best.safetensors \
        --root ../shared/data/camvid --tta scales=0.5
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import seglab
from seglab.data import CamVid, EvalTransform
from seglab.inference import build_predictor, parse_tta_spec
from seglab.inference.crf_search import crf_grid_search, parse_grid

GRID = "bi_w=3,5;bi_xy_std=20,50,80;bi_rgb_std=3,8"
BASE = {"iterations": 5, "pos_w": 3.0, "pos_xy_std": 1.0}


class Part(torch.utils.data.Dataset):
    """Images [start, end) of a data set, keeping the attributes the search reads."""

    def __init__(self, ds, start, end):
        self.ds, self.idx = ds, range(start, end)
        self.num_classes, self.ignore_index, self.classes = ds.num_classes, ds.ignore_index, ds.classes

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[self.idx[i]]

    def read_raw(self, i):
        return self.ds.read_raw(self.idx[i])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", default="../shared/data/camvid")
    p.add_argument("--tta", default="scales=1")
    p.add_argument("--tune-images", type=int, default=40)
    p.add_argument("--grid", default=GRID)
    args = p.parse_args()
    model = seglab.load_model(args.checkpoint)
    cfg = model.seglab_config
    val = CamVid(args.root, split="val", transform=EvalTransform(cfg.get("mean"), cfg.get("std")))
    predictor = build_predictor(model, tta=parse_tta_spec(args.tta))
    tune, held = Part(val, 0, args.tune_images), Part(val, args.tune_images, len(val))
    t0 = time.perf_counter()
    best = next(r for r in crf_grid_search(predictor, tune, parse_grid(args.grid), base=BASE) if r["params"])
    tune_s = time.perf_counter() - t0
    deeplab = {"iterations": 5, "pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0, "bi_xy_std": 67.0, "bi_rgb_std": 3.0}
    grid = {k: (v,) for k, v in best["params"].items()}
    rows = crf_grid_search(predictor, held, {k: (v,) for k, v in deeplab.items()})
    rows += [r for r in crf_grid_search(predictor, held, grid) if r["params"]]
    for r in rows:
        label = "network only" if r["params"] is None else (
            "DeepLab default CRF" if r["params"] == deeplab else "CRF tuned on the first images")
        print(json.dumps({"bench": "crf_camvid", "setting": label, "params": r["params"],
                          "heldout_images": r["images"], "mIoU": round(r["mIoU"], 4), "aAcc": round(r["aAcc"], 4),
                          **{k: round(v, 4) for k, v in r.items() if k.startswith("trimap")},
                          "tuned_on_images": args.tune_images, "tune_seconds": round(tune_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
