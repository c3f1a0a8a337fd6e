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
    """--imgsz / --scale / --slide / --tta / --crf / --precision (--bf16) / --score-thresh / --backend as
    keyword arguments of `seglab.inference.options.resolve_options` (only those given)."""
    opts = {k: getattr(args, k, None) for k in ("imgsz", "scale", "slide", "tta", "crf", "score_thresh", "backend")}
    opts["precision"] = getattr(args, "precision", None) or ("bf16" if getattr(args, "bf16", False) else None)
    return {k: v for k, v in opts.items() if v is not None}


# --- subcommands -----------------------------------------------------------------------------------

def cmd_models(args) -> int:
    from . import create_model, list_models
    from .registry import model_task
    from .tasks import task_for_model

    if args.pretrained:
        from .pretrained import list_pretrained, pretrained_table

        cards = list_pretrained(args.filter)
        print(pretrained_table([c for c in cards if args.task in (None, c["task"])]))
        return 0
    names = list_models(args.filter, task=args.task)
    if not names:
        from .pretrained import list_pretrained, pretrained_table

        cards = list_pretrained(args.filter)
        if not cards:
            raise SeglabError(f"no architecture and no pretrained model matches {args.filter!r}; seglab models "
                              f"lists the architectures, seglab models --pretrained the shipped weights")
        print(f"no architecture matches {args.filter!r}; pretrained models that do:")
        print(pretrained_table(cards))
        return 0
    if args.num_things is not None and not 1 <= args.num_things <= args.num_classes:
        raise SeglabError(f"--num-things must be between 1 and --num-classes ({args.num_classes}), got {args.num_things}")
    if not args.params:
        from .pretrained import list_pretrained

        for n in names:
            print(f"{n:<28} {model_task(n)}")
        shipped = [c["name"] for c in list_pretrained(args.filter) if args.task in (None, c["task"])]
        if shipped:  # the architectures alone hide the weights that ship with them
            print(f"pretrained weights{' that match' if args.filter else ''}: {', '.join(shipped)} (seglab models "
                  f"--pretrained lists them; use a name as model.weights=NAME or --checkpoint NAME)")
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


def cmd_info(args) -> int:
    from .pretrained import format_card, model_card

    print(format_card(model_card(args.model)))
    return 0


def cmd_config(args) -> int:
    from .config import RECIPES, list_recipes, recipe_path

    if args.action == "list":
        for name in list_recipes():
            first = next((ln[1:].strip() for ln in (RECIPES / f"{name}.yaml").read_text().splitlines()
                          if ln.startswith("#")), "")
            print(f"{name:<28} {first[:90]}")
        print("seglab config show NAME > my.yaml copies one; seglab train NAME key=value ... trains it as it is")
        return 0
    if not args.name:
        raise SeglabError("config show needs a recipe name (seglab config list shows them)")
    sys.stdout.write(recipe_path(args.name).read_text())
    return 0


def cmd_data(args) -> int:
    if args.action == "check":
        from .config import load_config
        from .data.check import check_data

        cfg = load_config(args.config, args.overrides) if args.config else None
        problems = check_data(args.root, config=cfg, log=_log)
        if problems:
            for p in problems:
                print(f"problem: {p}", file=sys.stderr)
            raise SeglabError(f"data check found {len(problems)} problem(s); the first: {problems[0]}")
        _log("data check passed: every image has its label, sizes agree, every class has training pixels")
        return 0
    from .data.convert import convert_folder, convert_instance_masks

    if args.instances:
        if args.palette:
            raise SeglabError("--instances reads instance-id PNGs; --palette is for colour-coded semantic masks")
        classes = args.classes.split(",") if args.classes else ["object"]
        if len(classes) != 1:
            raise SeglabError(f"--instances: one class for every object (--classes person), got {args.classes!r}")
        counts = convert_instance_masks(args.root, args.out, images=args.images, masks=args.masks,
                                        mask_suffix=args.mask_suffix, class_name=classes[0], split=args.split,
                                        seed=args.seed, log=_log)
        _log(f"wrote {sum(counts.values())} images to {args.out}; train an instance model on them with "
             f"data.name=coco_instances data.root={args.out}")
        return 0
    counts = convert_folder(args.root, args.out, images=args.images, masks=args.masks, mask_suffix=args.mask_suffix,
                            palette=args.palette, split=args.split, seed=args.seed, unknown=args.unknown, log=_log,
                            classes=args.classes.split(",") if args.classes else None)
    _log(f"wrote {sum(counts.values())} pairs to {args.out}; check them with: seglab data check {args.out}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .engine import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume, log=_log, device=args.device, overwrite=args.overwrite)
    if result.best_epoch >= 0:
        _log(f"best val {result.best_key.replace('_', ' ')} {100 * result.best_value:.2f} at epoch {result.best_epoch}")
    _log(f"outputs in {result.out_dir}/: best.safetensors (model), last.pt (resume with --resume), "
         f"metrics.jsonl, curves.png")
    return 0


def cmd_pack(args) -> int:
    from .hub import pack_model, read_model_metadata
    from .inference.options import resolve_options

    # checked with the limits a config has (one line naming --tta), so the file loads back
    inference = {} if args.tta is None else {"tta": resolve_options(tta=args.tta).tta}
    if args.imgsz is not None:
        from .inference.scale import parse_imgsz

        size = parse_imgsz(args.imgsz)
        inference.update({"scale": 1.0} if size.factor else {"imgsz": size.short_side or list(size.size)})
    out = pack_model(args.checkpoint, args.out, half=not args.fp32, drop_aux=True, inference=inference or None)
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
    options = resolve_options(model_config=model.seglab_config, eval_config=cfg.eval,
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
    from .inference.inputs import default_out_dir

    if args.checkpoint and args.model:  # which one would predict? (the file won silently)
        raise SeglabError(f"predict takes --checkpoint ({args.checkpoint}) or --model ({args.model}), not both")
    source = args.checkpoint or args.model
    if not source:
        raise SeglabError("predict needs --checkpoint PATH (a .safetensors or .onnx model file) or --model NAME")
    out = Path(args.out) if args.out else default_out_dir()
    lines = predict_to_folder(source, args.inputs, out, device=args.device, progress=_show_progress(),
                              save_frames=args.save_frames, log=_log, **_inference_options(args))
    for line in lines:
        _log(line)
    return 0


def cmd_serve(args) -> int:
    from .serve import run_server
    from .serve.app import ServeSettings

    for name, value, low in (("--workers", args.workers, 1), ("--max-batch", args.max_batch, 1),
                             ("--queue-limit", args.queue_limit, 1), ("--max-pixels", args.max_pixels, 1),
                             ("--batch-wait-ms", args.batch_wait_ms, 0), ("--max-upload-mb", args.max_upload_mb, 0)):
        if not value >= low or value != value:
            raise SeglabError(f"{name} must be at least {low}, got {value}")
    settings = ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, queue_limit=args.queue_limit,
                             workers=args.workers, max_upload_bytes=int(args.max_upload_mb * 2**20),
                             max_pixels=args.max_pixels)
    run_server(args.model, host=args.host, port=args.port, device=args.device, settings=settings, log=_log,
               access_log=not args.no_access_log, **_inference_options(args))
    return 0


def cmd_export(args) -> int:
    from .export import export_model

    result = export_model(args.model, args.format, out=args.out, dynamic=args.dynamic, opset=args.opset,
                          precision=args.precision, imgsz=args.imgsz, int8=args.int8, calibration=args.calibration,
                          verify=args.verify, exporter=args.exporter, log=_log)
    _log(f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MiB); {result.summary}")
    if args.format == "onnx":
        _log(f"predict with it: seglab predict --checkpoint {result.path} IMAGES... (needs pip install seglab[onnx])")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, log=_log, device=args.device)
    return 0


# --- parser ----------------------------------------------------------------------------------------

def _class_count(text: str) -> int:
    value = _positive_int(text)
    if value > 100_000:  # a classifier that size needs gigabytes; no segmentation data set has so many classes
        raise argparse.ArgumentTypeError(f"expected at most 100000 classes, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"seglab: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_device_option(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", default=None, metavar="DEVICE",
                   help="auto (default: CUDA if available, else CPU), cpu, cuda, cuda:N or mps")


def _add_inference_options(s: argparse.ArgumentParser, *, crf: bool = True) -> None:
    size = s.add_mutually_exclusive_group()
    size.add_argument("--imgsz", default=None, metavar="SIZE",
                      help="size images are predicted at: a short side (360), HxW (360x480) or 'native' "
                           "(default: the short side of the model's training images, recorded in its file)")
    size.add_argument("--scale", default=None, type=float, metavar="F",
                      help="predict at F times each image's own size (1: as it is)")
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
    s.add_argument("--backend", choices=["auto", "eager", "compile"], default=None,
                   help="auto (default): the fastest path that keeps the labels (BatchNorm folded, channels-last); "
                        "eager: the model as it is; compile: auto + torch.compile (compile time reported, eager "
                        "fallback)")
    _add_device_option(s)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="seglab", description="Semantic, instance and panoptic segmentation.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--version", action="version", version=f"seglab {__import__('seglab').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="train and evaluate the default model on the built-in synthetic data")
    s.add_argument("--out", default="seglab_demo", help="output folder (default: ./seglab_demo)")
    s.add_argument("--epochs", type=_positive_int, default=None, help="override the demo's number of epochs")
    _add_device_option(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", help="train from a YAML config")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=0.02 data.root=/data/camvid")
    s.add_argument("--resume", action="store_true", help="continue from last.pt in train.out_dir")
    s.add_argument("--overwrite", action="store_true",
                   help="start a new run in a train.out_dir that holds another run (its model is deleted)")
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
                                       "COCO panoptic JSON) for images, videos or folders")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, or folders (walked recursively; their structure is kept in --out)")
    s.add_argument("--checkpoint", help="a seglab .safetensors model file (e.g. best.safetensors) or an exported "
                                        ".onnx file")
    s.add_argument("--model", help="name of a model shipped with seglab")
    s.add_argument("--out", default=None, help="output folder (default: a new runs/predict/<n>)")
    s.add_argument("--save-frames", action="store_true",
                   help="videos: also write the label PNG (or panoptic PNG) of every frame into <out>/<video>/")
    s.add_argument("--score-thresh", type=float, default=0.5,
                   help="instance models: lowest score drawn on the overlays (default 0.5; the COCO JSON "
                        "keeps every detection)")
    _add_inference_options(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("serve", help="serve models over HTTP with a page to try them in a browser "
                                      "(needs pip install 'seglab[serve]')")
    s.add_argument("--model", action="append", required=True, metavar="NAME_OR_FILE",
                   help="a model file or a shipped model's name; repeat for several; ALIAS=FILE names it")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--workers", type=int, default=1, help="threads running the models (default 1)")
    s.add_argument("--max-batch", type=int, default=4, help="images predicted together at most (default 4)")
    s.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="how long a free worker waits for more requests to batch (default 10 ms)")
    s.add_argument("--queue-limit", type=int, default=32,
                   help="requests held at once; beyond it 503 with Retry-After (default 32)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20)")
    s.add_argument("--max-pixels", type=int, default=16_000_000,
                   help="largest image in pixels, checked on the declared size before decoding (default 16e6)")
    s.add_argument("--score-thresh", type=float, default=None,
                   help="instance models: default lowest score of the segments returned (default: the model's, 0.5)")
    s.add_argument("--no-access-log", action="store_true", help="do not log every request")
    _add_inference_options(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("pack", help="make a trained model file ready to ship: no training-only heads, "
                                     "float16, default prediction settings")
    s.add_argument("checkpoint", help="a seglab .safetensors model file (e.g. best.safetensors)")
    s.add_argument("--out", required=True, help="the packed .safetensors file to write")
    s.add_argument("--tta", default=None, metavar="SPEC", help="prediction default stored in the file, e.g. flip")
    s.add_argument("--imgsz", default=None, metavar="SIZE",
                   help="prediction size stored in the file: a short side (360), HxW, or 'native' (default: the "
                        "short side of the training images, which best.safetensors records)")
    s.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    s.set_defaults(func=cmd_pack)

    s = sub.add_parser("export", help="export a model to ONNX (runs in onnxruntime), TorchScript or torch.export "
                                       "(.pt2), checked against PyTorch on export")
    s.add_argument("model", help="a seglab .safetensors model file or a shipped model's name")
    s.add_argument("--format", choices=["onnx", "torchscript", "pt2"], default="onnx")
    s.add_argument("--out", default=None, help="the file to write (default: <model>.<format suffix> beside it, "
                                               "or in the current folder for a shipped model)")
    s.add_argument("--imgsz", default=None, metavar="HxW",
                   help="input size of the exported graph (default: the model's training size, else 512x512)")
    s.add_argument("--dynamic", action="store_true", help="any input height and width (the batch size is "
                                                          "always free)")
    s.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    s.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="weights and arithmetic of the exported graph (inputs and outputs stay float32)")
    s.add_argument("--int8", action="store_true", help="ONNX: also write <out>.int8.onnx, statically quantized to "
                                                       "int8 (onnxruntime QDQ) with --calibration images")
    s.add_argument("--calibration", default=None, metavar="DIR",
                   help="images for --int8 calibration and for the check on export (default: generated images)")
    s.add_argument("--verify", nargs="*", default=None, metavar="IMAGE",
                   help="images to compare PyTorch and the exported file on (default: the --calibration "
                        "images, else generated ones)")
    s.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="ONNX: PyTorch's TorchScript-based exporter (default: seconds, every seglab model but a "
                        "few) or its torch.export-based one (needs onnxscript; minutes)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("crf-search", help="grid-search the dense CRF's parameters on the validation split")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--grid", default=None,
                   help="e.g. 'bi_w=3,4,5;bi_xy_std=30,50,80;bi_rgb_std=3,5' (that is the default)")
    s.add_argument("--base", default=None, help="fixed CRF parameters, e.g. iterations=10,pos_w=3")
    s.add_argument("--max-images", type=_positive_int, default=None, help="use only the first N validation images")
    s.add_argument("--out", default=None, help="JSON results (default: <checkpoint folder>/crf_search.json)")
    _add_inference_options(s, crf=False)
    s.set_defaults(func=cmd_crf_search)

    s = sub.add_parser("models", help="list the registered models")
    s.add_argument("filter", nargs="?", default=None, help="substring to filter names")
    s.add_argument("--task", choices=["semantic", "joint", "instance", "panoptic"])
    s.add_argument("--params", action="store_true", help="also print parameter counts")
    s.add_argument("--pretrained", action="store_true",
                   help="list the pretrained models shipped with seglab (usable by name as weights)")
    s.add_argument("--num-classes", type=_class_count, default=21, help="classes for --params (default 21)")
    s.add_argument("--aux", action="store_true", help="with --params: build models with aux_loss=True")
    s.add_argument("--num-things", type=int, default=None,
                   help="thing classes of panoptic models for --params (default: all but one of --num-classes)")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("info", help="the card of a shipped model or a model file: task, data set, classes, input "
                                     "scale, figure and the command that reproduces it")
    s.add_argument("model", metavar="NAME_OR_FILE")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("config", help="the recipes shipped with seglab: list, show NAME (> my.yaml)")
    s.add_argument("action", choices=["list", "show"])
    s.add_argument("name", nargs="?", default=None, help="a recipe, e.g. camvid/bisenetv2")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("data", help="check a data set before training (check ROOT), or convert masks and split a "
                                    "flat folder (convert SRC --out DST)")
    data = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = data.add_parser("check", help="counts, unpaired files, size mismatches, class histogram, the 0/255 trap")
    c.add_argument("root", help="the data set's folder (images/<split>, labels/<split>, classes.txt)")
    c.add_argument("--config", default=None, help="read data.name, data.kwargs (label_map, classes) and splits from "
                                                  "this config (a file or a recipe name); ROOT replaces data.root")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the config, e.g. data.kwargs.label_map={255: 1}")
    c.set_defaults(func=cmd_data)
    c = data.add_parser("convert", help="RGB colour masks -> index PNGs with a palette; --split a flat folder")
    c.add_argument("root", metavar="SRC", help="folder with images/ and labels/ (or masks/), flat or split")
    c.add_argument("--out", required=True, help="the folder layout to write (images/<split>, labels/<split>, classes.txt)")
    c.add_argument("--images", default="images", help="image subfolder of SRC (default images)")
    c.add_argument("--masks", default=None, help="mask subfolder of SRC (default: labels, masks or annotations)")
    c.add_argument("--mask-suffix", default="", help="mask name = image name + this + .png (e.g. _mask)")
    c.add_argument("--palette", default=None, help="colours of RGB masks: camvid, voc, cityscapes, ade20k or a file "
                                                   "of `name r g b` lines (class i = line i)")
    c.add_argument("--classes", default=None, help="class names for classes.txt, comma-separated (class i = name i), "
                                                   "e.g. background,person")
    c.add_argument("--unknown", choices=["error", "ignore"], default="error",
                   help="a colour outside the palette: stop (default) or map it to the ignore index 255")
    c.add_argument("--instances", action="store_true", help="the masks are instance-id PNGs (0 = background, k = "
                   "object k): write COCO instance annotations (--classes names the one class)")
    c.add_argument("--split", type=float, default=None, help="fraction of a flat folder's images for train, e.g. 0.8")
    c.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    c.set_defaults(func=cmd_data)
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
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe (`| head`) fails here, inside the handler, not at exit
        return status
    except (SeglabError, OSError, MemoryError) as e:
        if args.debug:
            raise
        if isinstance(e, BrokenPipeError):  # `seglab models | head -1`: the reader has gone, say nothing
            _silence_stdout()
            return 141
        print(f"seglab: error: {error_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, or an input no check caught: still one line, the traceback on request
        if args.debug:
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        print(f"seglab: error: unexpected {type(e).__name__}: {first} (an input seglab does not check, or a "
              f"bug; `seglab --debug {args.command} ...` shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        kept = " (training progress is kept in last.pt up to the last finished epoch)" if args.command == "train" else ""
        print(f"seglab: interrupted{kept}", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()


def error_line(e: BaseException) -> str:
    """One line for an error that reaches the command line: a SeglabError's own message; for an OSError
    the file and the reason (an unexpected one: everything seglab writes goes through
    `seglab.utils.io`, which names the file itself); for memory, what ran out."""
    if isinstance(e, SeglabError):
        text = str(e)
    elif isinstance(e, MemoryError):
        text = f"out of memory ({str(e) or 'an allocation failed'}); use smaller images, batches or models"
    else:
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        text = f"{where}: {e.strerror or e}" if where else f"{e.strerror or e}"
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not fail on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _leave_process_group() -> None:
    """Under torchrun, leave the process group the engine joined (once the command is done)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()  # every rank done before any leaves (a peer that left aborts a rank still in gloo)
        except Exception:  # a rank that failed already: leave anyway
            pass
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
