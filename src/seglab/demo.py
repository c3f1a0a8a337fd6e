"""`seglab demo`: the whole semantic pipeline on the built-in synthetic data set, offline.

Generates the data (deterministic PNG files), trains the default model from configs/demo.yaml,
evaluates it (per-class table, confusion matrix), writes overlays for a few validation images and the
training curve, and says where everything is.
"""
from __future__ import annotations

import time
from pathlib import Path

import yaml

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def run_demo(out: Path, *, epochs: int | None = None, progress: bool | None = None, log=print,
             num_train: int | None = None, num_val: int | None = None, device: str | None = None) -> dict:
    """Run the demo into `out` (on `device`: auto, cpu, cuda, ...); returns the final validation metrics."""
    from .config import config_from_dict
    from .data import generate_synthetic
    from .engine import evaluate_checkpoint, predict_to_folder, train
    from .engine.loop import show_progress

    t0 = time.perf_counter()
    out = Path(out)
    data_root = out / "data"
    sizes = {k: v for k, v in (("num_train", num_train), ("num_val", num_val)) if v is not None}
    generate_synthetic(data_root, **sizes)
    log(f"synthetic data set written to {data_root}/ ({time.perf_counter() - t0:.1f}s)")

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    overrides = [f"data.root={data_root}", f"train.out_dir={out}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    cfg = config_from_dict(raw, overrides, source=str(DEMO_CONFIG))
    log(f"training {cfg.model.name} for {cfg.train.epochs} epochs ...")
    result = train(cfg, progress=progress, log=log, device=device, overwrite=True)  # the demo's own folder

    _, results, _ = evaluate_checkpoint(cfg, result.best_path, out_dir=out, device=device,
                                        progress=show_progress(progress), log=log)
    val_images = sorted((data_root / "images").glob("val_*.png"))[:4] or sorted(data_root.rglob("*.png"))[:4]
    predict_to_folder(result.best_path, val_images, out / "overlays", device=device)
    log(f"\ndemo finished in {time.perf_counter() - t0:.0f}s: val mIoU {100 * results['mIoU']:.2f}")
    log(f"  model            {result.best_path}")
    log(f"  training curve   {out / 'curves.png'}")
    log(f"  confusion matrix {out / 'confusion_matrix.png'}")
    log(f"  overlays         {out / 'overlays'}/")
    log(f"  metrics          {out / 'eval_metrics.json'}, {out / 'metrics.jsonl'}")
    log(f"predict your own images: seglab predict --checkpoint {result.best_path} IMAGE --out OUT")
    return results
