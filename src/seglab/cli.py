"""The `seglab` command. It only parses arguments and calls the same public functions a Python user
calls. A user mistake prints one line `seglab: error: ...` and exits with status 2 (`--debug` shows
the traceback)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import SeglabError


def _parse_slide(text: str | None):
    """`512,stride=341` or `512x384,stride=341x256` -> ((512, 512), (341, 341))."""
    if not text:
        return None, None

    def pair(v: str):
        parts = v.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise SeglabError(f"--slide: expected integers like 512 or 512x384, got {v!r}") from None
        if len(nums) not in (1, 2) or min(nums) <= 0:
            raise SeglabError(f"--slide: expected positive sizes like 512 or 512x384, got {v!r}")
        return (nums[0], nums[-1])

    crop_text, *rest = text.split(",")
    crop, stride = pair(crop_text), None
    for item in rest:
        key, _, value = item.partition("=")
        if key.strip() != "stride":
            raise SeglabError(f"--slide: unknown option {key!r} (expected stride=N)")
        stride = pair(value)
    return crop, stride


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stdout)


def _predictor_from(args, model, cfg):
    """The predictor that --slide / --tta / --crf / --bf16 (or the config's eval section) describe."""
    from .inference import build_predictor, parse_tta_spec
    from .inference.crf_search import parse_crf_params

    ev = cfg.eval if cfg is not None else None
    if ev is None:  # no config: the settings stored with the model (`seglab pack --tta`), if any
        from .config import EvalConfig

        ev = EvalConfig.model_validate(getattr(model, "seglab_config", {}).get("inference") or {})
    crop, stride = _parse_slide(args.slide)
    blend = "gaussian"
    if crop is None and ev is not None and ev.slide is not None:
        crop, stride, blend = ev.slide.crop, ev.slide.stride, ev.slide.blend
    tta = ev.tta.model_dump() if ev is not None and ev.tta is not None else None
    if args.tta is not None:
        try:
            tta = parse_tta_spec(args.tta)
        except ValueError as e:
            raise SeglabError(f"--tta: {e}") from None
    crf = ev.crf.model_dump() if ev is not None and ev.crf is not None else None
    if args.crf is not None:
        crf = {**(crf or {}), **parse_crf_params(args.crf)}
    return build_predictor(model, slide=crop, stride=stride, blend=blend, bf16=args.bf16, tta=tta, crf=crf)


# --- subcommands -----------------------------------------------------------------------------------

def cmd_models(args) -> int:
    from . import create_model, list_models
    from .registry import model_task

    names = list_models(args.filter, task=args.task)
    if not args.params:
        for n in names:
            print(f"{n:<28} {model_task(n)}")
        return 0
    from .utils.params import count_parameters

    print(f"parameters (millions) at {args.num_classes} classes, default settings; 'eval' leaves out "
          f"auxiliary heads used only in training")
    print(f"{'model':<27} {'task':<10} {'eval':>8} {'total':>8}")
    num_things = args.num_things if args.num_things is not None else args.num_classes - 1
    if any(model_task(n) == "panoptic" for n in names):
        print(f"panoptic models: the last {num_things} of the {args.num_classes} classes are things")
    for n in names:
        extra = {"num_things": num_things} if model_task(n) == "panoptic" else {}
        try:
            model = create_model(n, num_classes=args.num_classes, **extra, **({"aux_loss": True} if args.aux else {}))
        except SeglabError:  # a model without an auxiliary head
            model = create_model(n, num_classes=args.num_classes, **extra)
        total, used = count_parameters(model, in_channels=getattr(model, "in_channels", 3))
        print(f"{n:<27} {model_task(n):<10} {used / 1e6:>8.2f} {total / 1e6:>8.2f}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .engine import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume, log=_log)
    if result.best_PQ is not None:  # a panoptic model
        _log(f"best val PQ {100 * result.best_PQ:.2f} at epoch {result.best_epoch}")
    elif result.best_mask_AP is not None:  # an instance model
        _log(f"best val mask AP {100 * result.best_mask_AP:.2f} at epoch {result.best_epoch}")
    else:
        _log(f"best val mIoU {100 * result.best_mIoU:.2f} at epoch {result.best_epoch}")
    _log(f"outputs in {result.out_dir}/: best.safetensors (model), last.pt (resume with --resume), "
         f"metrics.jsonl, curves.png")
    return 0


def _model_and_val_set(cfg, checkpoint: str):
    """The config's validation split and its model with the checkpoint's weights (best.safetensors,
    last.pt or a torchvision file); an instance data set for an instance model."""
    from .engine.checkpoint import load_checkpoint
    from .engine.instance import build_instance_datasets
    from .engine.panoptic import build_panoptic_datasets, build_panoptic_model
    from .engine.trainer import build_datasets, build_model_for
    from .hub import load_model, load_weights, read_model_metadata, resolve_model_file
    from .registry import model_task

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        try:  # the name of a shipped model, e.g. bisenetv2.camvid
            ckpt = resolve_model_file(checkpoint)
        except SeglabError:
            raise SeglabError(f"checkpoint not found: {ckpt}") from None
    task = model_task(cfg.model.name)
    builders = {"instance": build_instance_datasets, "panoptic": build_panoptic_datasets}
    _, val_ds = builders.get(task, build_datasets)(cfg, train=False)
    if ckpt.suffix == ".safetensors" and _has_seglab_metadata(ckpt):
        # A seglab model file describes its own architecture (possibly packed without aux heads).
        meta = read_model_metadata(ckpt)
        if model_task(meta["name"]) != task:
            raise SeglabError(f"{ckpt}: holds a {model_task(meta['name'])} model ({meta['name']}) but the config's "
                              f"model {cfg.model.name!r} is a {task} model")
        if meta["num_classes"] != val_ds.num_classes:
            raise SeglabError(f"{ckpt}: the model predicts {meta['num_classes']} classes, the config's data set "
                              f"has {val_ds.num_classes}")
        return load_model(ckpt), val_ds
    # The checkpoint replaces whatever initial weights the config names.
    no_init = cfg.model.model_copy(update={"weights": None, "backbone_weights": None})
    no_init_cfg = cfg.model_copy(update={"model": no_init})
    model = build_panoptic_model(no_init_cfg, val_ds) if task == "panoptic" else \
        build_model_for(no_init_cfg, val_ds.num_classes)
    if ckpt.suffix == ".pt":  # a training state (last.pt)
        model.load_state_dict(load_checkpoint(ckpt)["model"])
    else:
        load_weights(model, ckpt)
    return model.eval(), val_ds


def _has_seglab_metadata(path: Path) -> bool:
    from .hub import read_model_metadata

    try:
        read_model_metadata(path)
    except SeglabError:
        return False
    return True


def cmd_pack(args) -> int:
    from .hub import pack_model, read_model_metadata
    from .inference import parse_tta_spec

    inference = None
    if args.tta is not None:
        try:
            inference = {"tta": parse_tta_spec(args.tta)}
        except ValueError as e:
            raise SeglabError(f"--tta: {e}") from None
    out = pack_model(args.checkpoint, args.out, half=not args.fp32, drop_aux=True, inference=inference)
    meta = read_model_metadata(out)
    _log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {'float32' if args.fp32 else 'float16'}, "
         f"{meta['name']}, {meta['num_classes']} classes); use it with: seglab predict --checkpoint {out} ...")
    return 0


def cmd_crf_search(args) -> int:
    from .config import load_config
    from .engine.trainer import show_progress
    from .inference.crf_search import crf_grid_search, parse_crf_params, parse_grid
    from .utils.io import write_json_atomic

    cfg = load_config(args.config, args.overrides)
    _refuse_non_semantic_model(cfg.model.name, "crf-search (the CRF refines semantic predictions)")
    model, val_ds = _model_and_val_set(cfg, args.checkpoint)
    args.crf = None
    predictor = _predictor_from(args, model, cfg)
    grid = parse_grid(args.grid)
    base = {**(cfg.eval.crf.model_dump() if cfg.eval.crf else {}), **parse_crf_params(args.base or "")}
    t0 = time.perf_counter()
    rows = crf_grid_search(predictor, val_ds, grid, base=base, max_images=args.max_images,
                           progress=show_progress(None))
    trimap_keys = [k for k in rows[0] if k.startswith("trimap")]
    _log(f"{'CRF parameters':<72} {'mIoU':>6} {'aAcc':>6} " + " ".join(f"{k[7:]:>12}" for k in trimap_keys))
    for r in rows:
        name = "none (network only)" if r["params"] is None else ", ".join(f"{k}={v:g}" for k, v in r["params"].items())
        _log(f"{name:<72} {100 * r['mIoU']:6.2f} {100 * r['aAcc']:6.2f} "
             + " ".join(f"{100 * r[k]:12.2f}" for k in trimap_keys))
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "crf_search.json"
    write_json_atomic(out, rows)
    best = next(r for r in rows if r["params"] is not None)
    _log(f"searched {len(rows) - 1} settings on {rows[0]['images']} images in {time.perf_counter() - t0:.0f}s; "
         f"results in {out}")
    _log("best: eval.crf = {" + ", ".join(f"{k}: {v:g}" for k, v in best["params"].items()) + "}")
    return 0


def cmd_eval(args) -> int:
    from .config import load_config
    from .engine.evaluate import evaluate_and_report
    from .engine.trainer import show_progress

    cfg = load_config(args.config, args.overrides)
    if _task(cfg.model.name) == "panoptic":
        return _eval_panoptic(args, cfg)
    if _task(cfg.model.name) == "instance":
        return _eval_instances(args, cfg)
    model, val_ds = _model_and_val_set(cfg, args.checkpoint)
    ckpt = Path(args.checkpoint)
    predictor = _predictor_from(args, model, cfg)
    out = Path(args.out) if args.out else ckpt.parent / "eval"
    t0 = time.perf_counter()
    results = evaluate_and_report(model, val_ds, out, predictor=predictor, progress=show_progress(None), log=_log)
    _log(f"evaluated {len(val_ds)} images in {time.perf_counter() - t0:.1f}s: mIoU {100 * results['mIoU']:.2f}")
    _log(f"wrote {out}/eval_metrics.json and {out}/confusion_matrix.png")
    return 0


def _eval_instances(args, cfg) -> int:
    """`seglab eval` of an instance model: COCO mask / box AP over the val split (engine/evaluate_instances)."""
    from .engine.evaluate_instances import evaluate_instances_and_report, summary_line

    return _eval_detections(args, cfg, evaluate_instances_and_report, summary_line,
                            lambda out: f"the COCO results {out}/instances_results.json")


def _eval_panoptic(args, cfg) -> int:
    """`seglab eval` of a panoptic model: PQ / SQ / RQ over the val split, predictions written in the COCO
    panoptic format (engine/panoptic)."""
    from .engine.panoptic import PREDICTIONS, evaluate_panoptic_and_report, summary_line

    return _eval_detections(args, cfg, evaluate_panoptic_and_report, summary_line,
                            lambda out: f"the COCO panoptic predictions {out}/{PREDICTIONS}.json "
                                        f"(PNGs in {out}/{PREDICTIONS}/)")


def _eval_detections(args, cfg, evaluate_and_report, summary_line, predictions_written) -> int:
    """The shared part of instance and panoptic `seglab eval`: load, evaluate, report where the files are."""
    from .engine.trainer import show_progress

    _refuse_semantic_options(args, cfg.model.name)
    model, val_ds = _model_and_val_set(cfg, args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
    t0 = time.perf_counter()
    results = evaluate_and_report(model, val_ds, out, progress=show_progress(None), bf16=args.bf16, log=_log)
    _log(f"evaluated {len(val_ds)} images in {time.perf_counter() - t0:.1f}s: {summary_line(results)}")
    _log(f"wrote {out}/eval_metrics.json and {predictions_written(out)}")
    return 0


def _task(name: str) -> str:
    from .registry import model_task

    return model_task(name)


def _refuse_non_semantic_model(name: str, what: str) -> None:
    if _task(name) in ("instance", "panoptic"):
        raise SeglabError(f"{what}: not available for {_task(name)} model {name!r}")


def _refuse_semantic_options(args, name: str) -> None:
    given = [flag for flag, value in (("--slide", args.slide), ("--tta", args.tta),
                                      ("--crf", getattr(args, "crf", None))) if value is not None]
    if given:
        raise SeglabError(f"{', '.join(given)}: semantic prediction options, not supported for {_task(name)} "
                          f"model {name!r}")


def cmd_predict(args) -> int:
    from .config import IMAGENET_MEAN, IMAGENET_STD
    from .data.palettes import default_palette
    from .engine.trainer import show_progress
    from .hub import load_model
    from .inference.files import collect_inputs, predict_files

    source = args.checkpoint or args.model
    if not source:
        raise SeglabError("predict needs --checkpoint PATH (a .safetensors model) or --model NAME")
    files = collect_inputs(args.inputs)
    model = load_model(source)
    meta = model.seglab_config
    if _task(meta["name"]) == "panoptic":
        return _predict_panoptic(args, model, source, files)
    if _task(meta["name"]) == "instance":
        return _predict_instances(args, model, source, files)
    palette = meta.get("palette") or default_palette(meta["num_classes"])
    predictor = _predictor_from(args, model, None)
    in_channels = meta.get("kwargs", {}).get("in_channels", 3)
    out = Path(args.out)
    written = predict_files(predictor, files, out, mean=meta.get("mean", IMAGENET_MEAN),
                            std=meta.get("std", IMAGENET_STD), palette=[tuple(c) for c in palette],
                            in_channels=in_channels, progress=show_progress(None))
    _log(f"predicted {len(written)} image(s): label PNGs and overlays in {out}/")
    return 0


def _predict_instances(args, model, source: str, files) -> int:
    """`seglab predict` with an instance model: overlays and one COCO result JSON (inference/instances)."""
    from .engine.trainer import show_progress
    from .hub import read_model_metadata, resolve_model_file
    from .inference.instances import InstancePredictor, predict_instance_files

    meta = model.seglab_config
    _refuse_semantic_options(args, meta["name"])
    if not 0.0 <= args.score_thresh <= 1.0:
        raise SeglabError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    num_classes = meta["num_classes"]
    category_ids = read_model_metadata(resolve_model_file(source)).get("category_ids") \
        or list(range(1, num_classes + 1))
    class_names = meta.get("classes") or [str(i) for i in range(num_classes)]
    out = Path(args.out)
    overlays, json_path = predict_instance_files(
        InstancePredictor(model, bf16=args.bf16), files, out, class_names=class_names, category_ids=category_ids,
        score_threshold=args.score_thresh, progress=show_progress(None))
    _log(f"predicted {len(overlays)} image(s): instance overlays (score >= {args.score_thresh:g}) in {out}/, "
         f"COCO results (all detections) in {json_path}")
    return 0


def _predict_panoptic(args, model, source: str, files) -> int:
    """`seglab predict` with a panoptic model: per image the COCO panoptic PNG and a visualisation (stuff in
    class colours, each thing its own shade), one COCO panoptic JSON for all (engine/panoptic)."""
    from .engine.panoptic import model_categories, predict_panoptic_files
    from .engine.trainer import show_progress
    from .hub import read_model_metadata, resolve_model_file

    _refuse_semantic_options(args, model.seglab_config["name"])
    categories, class_to_category = model_categories(read_model_metadata(resolve_model_file(source)))
    out = Path(args.out)
    pictures, json_path = predict_panoptic_files(model, files, out, categories=categories,
                                                 class_to_category=class_to_category, bf16=args.bf16,
                                                 progress=show_progress(None))
    _log(f"predicted {len(pictures)} image(s): panoptic PNGs (*_panoptic.png) and visualisations "
         f"(*_panoptic_vis.png) in {out}/, COCO panoptic JSON in {json_path}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, log=_log)
    return 0


# --- parser ----------------------------------------------------------------------------------------

def _add_inference_options(s: argparse.ArgumentParser, *, crf: bool = True) -> None:
    s.add_argument("--slide", default=None, help="sliding-window inference, e.g. 512,stride=341")
    s.add_argument("--tta", default=None, metavar="SPEC",
                   help="test-time augmentation, e.g. flip,scales=0.75,1,1.25 (probabilities averaged)")
    if crf:
        s.add_argument("--crf", nargs="?", const="", default=None, metavar="PARAMS",
                       help="refine with the dense CRF; optional parameters, e.g. bi_w=5,bi_xy_std=50")
    s.add_argument("--bf16", action="store_true",
                   help="bf16 autocast: about 2x faster on CPUs with AVX-512 bf16, slightly different numbers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seglab", description="Semantic, instance and panoptic segmentation.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--version", action="version", version=f"seglab {__import__('seglab').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="train and evaluate the default model on the built-in synthetic data")
    s.add_argument("--out", default="seglab_demo", help="output folder (default: ./seglab_demo)")
    s.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", help="train from a YAML config")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=0.02 data.root=/data/camvid")
    s.add_argument("--resume", action="store_true", help="continue from last.pt in train.out_dir")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation split")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--checkpoint", required=True, help="best.safetensors, last.pt or a torchvision checkpoint")
    s.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval)")
    _add_inference_options(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="predict label maps and overlays (instance models: instance overlays "
                                       "and a COCO JSON; panoptic models: panoptic PNGs, visualisations and a "
                                       "COCO panoptic JSON) for images or folders")
    s.add_argument("inputs", nargs="+", metavar="INPUT")
    s.add_argument("--checkpoint", help="a seglab .safetensors model file (e.g. best.safetensors)")
    s.add_argument("--model", help="name of a model shipped with seglab")
    s.add_argument("--out", required=True)
    s.add_argument("--score-thresh", type=float, default=0.5,
                   help="instance models: lowest score drawn on the overlays (default 0.5; the COCO JSON "
                        "keeps every detection)")
    _add_inference_options(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("pack", help="make a trained model file ready to ship: no training-only heads, "
                                     "float16, default prediction settings")
    s.add_argument("checkpoint", help="a seglab .safetensors model file (e.g. best.safetensors)")
    s.add_argument("--out", required=True, help="the packed .safetensors file to write")
    s.add_argument("--tta", default=None, metavar="SPEC", help="prediction default stored in the file, e.g. flip")
    s.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    s.set_defaults(func=cmd_pack)

    s = sub.add_parser("crf-search", help="grid-search the dense CRF's parameters on the validation split")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--grid", default=None,
                   help="e.g. 'bi_w=3,4,5;bi_xy_std=30,50,80;bi_rgb_std=3,5' (that is the default)")
    s.add_argument("--base", default=None, help="fixed CRF parameters, e.g. iterations=10,pos_w=3")
    s.add_argument("--max-images", type=int, default=None, help="use only the first N validation images")
    s.add_argument("--out", default=None, help="JSON results (default: <checkpoint folder>/crf_search.json)")
    _add_inference_options(s, crf=False)
    s.set_defaults(func=cmd_crf_search)

    s = sub.add_parser("models", help="list the registered models")
    s.add_argument("filter", nargs="?", default=None, help="substring to filter names")
    s.add_argument("--task", choices=["semantic", "joint", "instance", "panoptic"])
    s.add_argument("--params", action="store_true", help="also print parameter counts")
    s.add_argument("--num-classes", type=int, default=21, help="classes for --params (default 21)")
    s.add_argument("--aux", action="store_true", help="with --params: build models with aux_loss=True")
    s.add_argument("--num-things", type=int, default=None,
                   help="thing classes of panoptic models for --params (default: all but one of --num-classes)")
    s.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also come after the options (`eval CFG --checkpoint X k=v`)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except SeglabError as e:
        if args.debug:
            raise
        print(f"seglab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seglab: interrupted (training progress is kept in last.pt up to the last finished epoch)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
