"""Prediction speed of a model side by side, in one run: PyTorch eager fp32, bf16 autocast + channels-last,
BatchNorm folded (fp32, channels-last; what `seglab predict` does by default), torch.compile, onnxruntime
fp32 and onnxruntime int8 (static QDQ, calibrated on training images), each at batch 1 and 8, without and
with the model's stored test-time augmentation; then `seglab predict` itself on a folder of images
(reading and PNG writing included).

Every variant predicts through the same seglab predictor (normalised 360x480 CamVid validation images
in, labels out: TTA, softmax and argmax included), so the figures are what a user gets. `agreement` is
the share of pixels whose label equals eager fp32's with the same TTA. One JSON line per measurement.

    /work/bin/cpujob timing python benchmarks/predict_speed.py --root ../shared/data/camvid \\
        | tee benchmarks/results/predict_speed_2cpu_epyc.jsonl
    python benchmarks/predict_speed.py --table benchmarks/results/predict_speed_2cpu_epyc.jsonl  # docs' tables
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from speed import cpu_name

import seglab
from seglab.data import CamVid, EvalTransform
from seglab.export import OnnxModel, export_model, fold_conv_bn
from seglab.inference import Predictor, TTAPredictor


def emit(**row) -> None:
    print(json.dumps({"benchmark": "predict_speed", "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
                      **row}), flush=True)


def predictor_for(model, *, tta: bool, precision: str = "fp32", channels_last: bool = False):
    p = Predictor(model, precision=precision)
    p.channels_last = channels_last
    return TTAPredictor(p, flip=True) if tta else p


def images_per_second(predictor, batches: list[torch.Tensor], seconds: float) -> tuple[float, float, list[torch.Tensor]]:
    """(images per second of wall time, CPU seconds per image over all threads) over whole passes of
    `batches` (at least `seconds` long after one warm-up pass), and the labels of the last pass."""
    with torch.inference_mode():
        labels = [r.labels for b in batches for r in predictor.predict_tensors(b)]  # warm-up
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            labels = [r.labels for b in batches for r in predictor.predict_tensors(b)]
            n += sum(len(b) for b in batches)
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n, labels


def load() -> float:
    """The 1-minute load average: other processes on the machine (a quiet 2-core machine reads ~2 here)."""
    return round(os.getloadavg()[0], 2)


def agreement(labels, reference) -> float:
    same = sum((a == b).sum().item() for a, b in zip(labels, reference))
    return same / sum(a.numel() for a in reference)


def markdown_tables(path: str) -> str:
    """The measurements of a results file as the Markdown tables of docs/deploy.md."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip().startswith("{")]
    model_rows = [r for r in rows if "batch" in r]
    cli_rows = [r for r in rows if "batch" not in r]
    out = [f"Machine: {rows[0]['machine']}; model {rows[0]['model']} at {'x'.join(map(str, model_rows[0]['size']))}"
           if model_rows else "",
           "", "| variant | TTA | batch | images/s | ms / image | CPU ms / image | labels = eager fp32 | load |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in model_rows:
        out.append(f"| {r['variant']} | {r['tta']}{' (stored)' if r['stored_setting'] else ''} | {r['batch']} | "
                   f"{r['images_per_s']:.2f} | {r['ms_per_image']:.1f} | {r['cpu_ms_per_image']:.1f} | "
                   f"{100 * r['agreement']:.2f}% | {r['load']} |")
    if cli_rows:
        out += ["", "| whole command | images | wall s | images/s | CPU s | load |", "|---|---:|---:|---:|---:|---:|"]
        for r in cli_rows:
            out.append(f"| `{r['variant']}` | {r['images']} | {r['wall_s']} | {r['images_per_s']:.2f} | {r['cpu_s']} | "
                       f"{r['load']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", metavar="RESULTS.jsonl", help="print the Markdown tables of a results file and exit")
    ap.add_argument("--root", default="../shared/data/camvid")
    ap.add_argument("--model", default="bisenetv2.camvid")
    ap.add_argument("--images", type=int, default=16, help="validation images timed per variant")
    ap.add_argument("--seconds", type=float, default=6.0, help="least time measured per variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="variants to leave out (e.g. compile)")
    ap.add_argument("--cli-images", type=int, default=101, help="images for the seglab predict run (0: none)")
    args = ap.parse_args()
    if args.table:
        print(markdown_tables(args.table))
        return
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    model = seglab.load_model(args.model)
    config = model.seglab_config
    val = CamVid(args.root, split="val", transform=EvalTransform(config["mean"], config["std"]))
    train = CamVid(args.root, split="train", transform=EvalTransform(config["mean"], config["std"]))
    xs = [val[i]["image"] for i in range(min(args.images, len(val)))]
    size = tuple(xs[0].shape[-2:])
    batches = {1: [x[None] for x in xs], 8: [torch.stack(xs[i:i + 8]) for i in range(0, len(xs), 8)]}
    tmp = Path(tempfile.mkdtemp(prefix="predict_speed_"))
    stored_tta = bool((config.get("inference") or {}).get("tta", {}).get("flip"))

    x0 = xs[0][None]
    folded, count = fold_conv_bn(model, lambda m: m(x0))
    folded_cl = folded.to(memory_format=torch.channels_last)
    variants = {
        "eager_fp32": lambda tta: predictor_for(model, tta=tta),
        "bf16_channels_last": lambda tta: predictor_for(folded_cl, tta=tta, precision="bf16", channels_last=True),
        "folded_fp32_channels_last": lambda tta: predictor_for(folded_cl, tta=tta, channels_last=True),
    }
    notes = {"folded_fp32_channels_last": f"BatchNorm folded into {count} convolutions; seglab predict's default",
             "bf16_channels_last": "BatchNorm folded too"}
    if "compile" not in args.skip:
        t0 = time.perf_counter()
        compiled = torch.compile(folded_cl)
        with torch.inference_mode():
            for b in (1, 2, 8, 16):  # the batch sizes timed below (flip doubles them): compile each now
                compiled(torch.randn(b, 3, *size).contiguous(memory_format=torch.channels_last))
        notes["compile_fp32"] = f"torch.compile (inductor) of the folded model; compiling took {time.perf_counter() - t0:.0f} s"
        variants["compile_fp32"] = lambda tta: predictor_for(compiled, tta=tta, channels_last=True)
    if "onnxruntime" not in args.skip:
        t0 = time.perf_counter()
        calib = [str(train.samples[i][0]) for i in range(0, len(train), max(1, len(train) // 32))][:32]
        res = export_model(model, "onnx", out=tmp / "model.onnx", imgsz=size, int8="int8" not in args.skip,
                           calibration=None, verify=calib)
        onnx_fp32 = OnnxModel(res.path, threads=args.threads)
        notes["onnxruntime_fp32"] = (f"exported at {size[0]}x{size[1]} (batch free); export + check "
                                     f"{time.perf_counter() - t0:.0f} s")
        variants["onnxruntime_fp32"] = lambda tta: predictor_for(onnx_fp32, tta=tta)
        if res.int8_path is not None:
            onnx_int8 = OnnxModel(res.int8_path, threads=args.threads)
            notes["onnxruntime_int8"] = ("static int8 (QDQ, per-channel weights, percentile calibration on 32 training "
                                         "images; the last 2 convolutions float)")
            variants["onnxruntime_int8"] = lambda tta: predictor_for(onnx_int8, tta=tta)
        if "int8_dynamic" not in args.skip:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(res.path), str(tmp / "dynamic.onnx"), weight_type=QuantType.QUInt8)
            import onnx  # the seglab metadata survives quantize_dynamic; check it is there
            assert any(p.key == "seglab" for p in onnx.load(str(tmp / "dynamic.onnx")).metadata_props)
            onnx_dyn = OnnxModel(tmp / "dynamic.onnx", threads=args.threads)
            notes["onnxruntime_int8_dynamic"] = "dynamic int8 (quantize_dynamic: uint8 weights, activations per call)"
            variants["onnxruntime_int8_dynamic"] = lambda tta: predictor_for(onnx_dyn, tta=tta)

    for tta in (False, True):
        reference = {}
        for name, make in variants.items():
            for batch in (1, 8):
                if name in args.skip:
                    continue
                ips, cpu, labels = images_per_second(make(tta), batches[batch], args.seconds)
                if name == "eager_fp32" and batch == 1:
                    reference = labels
                emit(model=args.model, size=list(size), variant=name, batch=batch,
                     tta="flip" if tta else "none", stored_setting=tta == stored_tta,
                     images_per_s=round(ips, 2), ms_per_image=round(1000 / ips, 1),
                     cpu_ms_per_image=round(1000 * cpu, 1), load=load(),
                     agreement=round(agreement(labels, reference), 5), note=notes.get(name, ""))

    if args.cli_images:
        # seglab predict on a folder of validation images, with the model's stored settings (the default path)
        folder = tmp / "val"
        folder.mkdir()
        for i in range(min(args.cli_images, len(val))):
            shutil.copy(val.samples[i][0], folder / Path(val.samples[i][0]).name)
        n = len(list(folder.iterdir()))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for label, extra in [("seglab predict (default)", []), ("seglab predict --backend eager", ["--backend", "eager"]),
                             ("seglab predict --precision bf16", ["--precision", "bf16"])]:
            out = tmp / f"out_{len(extra)}_{extra[-1] if extra else 'default'}"
            cmd = [sys.executable, "-m", "seglab.cli", "predict", "--model", args.model, str(folder), "--out", str(out),
                   *extra]
            t0, usage0 = time.perf_counter(), os.times()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall, usage1 = time.perf_counter() - t0, os.times()
            cpu = (usage1.children_user + usage1.children_system) - (usage0.children_user + usage0.children_system)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            how = next((line for line in proc.stdout.splitlines() if line.startswith("predicting with")), "")
            emit(model=args.model, variant=label, images=n, wall_s=round(wall, 2), images_per_s=round(n / wall, 2),
                 cpu_s=round(cpu, 1), load=load(),
                 note=f"whole command: start-up, model load, reading, prediction, label PNG + overlay PNG writing; {how}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
