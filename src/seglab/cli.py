"""The `seglab` command. It only parses arguments and calls the same public functions a Python user
calls. A user mistake prints one line `seglab: error: ...` and exits with status 2 (`--debug` shows
the traceback)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import SeglabError


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stdout)


def _show_progress() -> bool:
    return sys.stderr.isatty()


def _inference_options(args) -> dict:
    """--slide / --tta / --crf / --precision (--bf16) / --score-thresh as keyword arguments of
    `seglab.inference.options.resolve_options` (only those given)."""
    opts = {k: getattr(args, k, None) for k in ("slide", "tta", "crf", "score_thresh")}
    opts["precision"] = getattr(args, "precision", None) or ("bf16" if getattr(args, "bf16", False) else None)
    return {k: v for k, v in opts.items() if v is not None}


# --- subcommands -----------------------------------------------------------------------------------

def cmd_models(args) -> int:
    from . import create_model, list_models
    from .registry import model_task
    from .tasks import task_for_model

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
    notes = dict.fromkeys(task_for_model(n).counting_note(args.num_classes, num_things) for n in names)
    for note in filter(None, notes):
        print(note)
    for n in names:
        extra = task_for_model(n).counting_kwargs(num_things)
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
    result = train(cfg, resume=args.resume, log=_log, device=args.device)
    if result.best_epoch >= 0:
        _log(f"best val {result.best_key.replace('_', ' ')} {100 * result.best_value:.2f} at epoch {result.best_epoch}")
    _log(f"outputs in {result.out_dir}/: best.safetensors (model), last.pt (resume with --resume), "
         f"metrics.jsonl, curves.png")
    return 0


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
    from .engine import load_for_evaluation, resolve_device
    from .inference.crf_search import crf_grid_search, parse_crf_params, parse_grid
    from .inference.options import resolve_options
    from .utils.io import write_json_atomic

    cfg = load_config(args.config, args.overrides)
    model, val_ds, task = load_for_evaluation(cfg, args.checkpoint, device=resolve_device(args.device))
    if task.name != "semantic":
        raise SeglabError(f"crf-search: the CRF refines semantic predictions, not available for {task.name} "
                          f"model {cfg.model.name!r}")
    options = resolve_options(stored=model.seglab_config.get("inference"), eval_config=cfg.eval,
                              **_inference_options(args)).with_(crf=None)
    predictor = task.build_predictor(model, options)
    grid = parse_grid(args.grid)
    base = {**(cfg.eval.crf.model_dump() if cfg.eval.crf else {}), **parse_crf_params(args.base or "")}
    t0 = time.perf_counter()
    rows = crf_grid_search(predictor, val_ds, grid, base=base, max_images=args.max_images,
                           progress=_show_progress())
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
    from .engine import evaluate_checkpoint
    from .tasks import task_for_model

    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    summary, _, written = evaluate_checkpoint(cfg, args.checkpoint, out_dir=args.out, device=args.device,
                                              progress=_show_progress(), log=_log, **_inference_options(args))
    if written:  # rank 0
        task = task_for_model(cfg.model.name)
        _log(f"evaluated in {time.perf_counter() - t0:.1f}s: {task.summary_line(summary)}")
        _log(f"wrote {' and '.join(written)}")
    return 0


def cmd_predict(args) -> int:
    from .engine import predict_to_folder

    source = args.checkpoint or args.model
    if not source:
        raise SeglabError("predict needs --checkpoint PATH (a .safetensors model) or --model NAME")
    for line in predict_to_folder(source, args.inputs, args.out, device=args.device, progress=_show_progress(),
                                  **_inference_options(args)):
        _log(line)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, log=_log, device=args.device)
    return 0


# --- parser ----------------------------------------------------------------------------------------

def _add_device_option(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", default=None, metavar="DEVICE",
                   help="auto (default: CUDA if available, else CPU), cpu, cuda, cuda:N or mps")


def _add_inference_options(s: argparse.ArgumentParser, *, crf: bool = True) -> None:
    s.add_argument("--slide", default=None, help="sliding-window inference, e.g. 512,stride=341")
    s.add_argument("--tta", default=None, metavar="SPEC",
                   help="test-time augmentation, e.g. flip,scales=0.75,1,1.25 (probabilities averaged)")
    if crf:
        s.add_argument("--crf", nargs="?", const="", default=None, metavar="PARAMS",
                       help="refine with the dense CRF; optional parameters, e.g. bi_w=5,bi_xy_std=50")
    s.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="autocast precision (default fp32); bf16 is about 2x faster on CPUs with AVX-512 bf16 "
                        "and on recent GPUs, with slightly different numbers")
    s.add_argument("--bf16", action="store_true", help="the same as --precision bf16")
    _add_device_option(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seglab", description="Semantic, instance and panoptic segmentation.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--version", action="version", version=f"seglab {__import__('seglab').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="train and evaluate the default model on the built-in synthetic data")
    s.add_argument("--out", default="seglab_demo", help="output folder (default: ./seglab_demo)")
    s.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")
    _add_device_option(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", help="train from a YAML config")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=0.02 data.root=/data/camvid")
    s.add_argument("--resume", action="store_true", help="continue from last.pt in train.out_dir")
    _add_device_option(s)
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
        kept = " (training progress is kept in last.pt up to the last finished epoch)" if args.command == "train" else ""
        print(f"seglab: interrupted{kept}", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun, leave the process group the engine joined (once the command is done)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
