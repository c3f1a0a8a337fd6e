"""Run every speed benchmark, keep their results, say what got slower, and write the tables of
docs/performance.md from the results files.

    /work/bin/cpujob timing python benchmarks/run_all.py        # all of them (about 10-15 minutes)
    python benchmarks/run_all.py --only metrics deform_conv      # some of them
    python benchmarks/run_all.py --no-run                        # results on disk vs committed
    python benchmarks/run_all.py --no-run --write-docs           # regenerate the docs tables

Each benchmark (BENCHMARKS below: the script, its arguments, how to name one measurement and which
fields are times) prints one JSON line per measurement; the runner writes them to
benchmarks/results/<name>_<tag>.jsonl (atomically, only when the script succeeded), then compares them
with the results committed in git (HEAD) for the same measurement: a time more than --tolerance (15%)
higher, or a rate that much lower, is listed as slower, and the exit status is 1 when anything is.
On a shared machine a single run can be slow by chance: rerun the benchmark that is named before
believing it. `run_all_<tag>.jsonl` records each run (commit, load average before and after, seconds).

`--write-docs` replaces the part of docs/performance.md between the `<!-- run_all:begin -->` and
`<!-- run_all:end -->` markers by tables made from the results files alone, headed by the machine's
matmul peak (fp32 and bf16 GFLOP/s, measured by speed.py in the same run). Benchmarks that are not
speed benchmarks (accuracy and time-to-accuracy: camvid_eval, crf_camvid, instance_synthetic,
panoptic_synthetic; train_profile, which needs a config and data) are not run here.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"

# name: script and arguments; `key`: the fields that name one measurement (with defaults for records
# written before a field existed); `lower` / `higher`: field patterns (dotted for nested dicts) that
# are times (lower is better) or rates (higher is better); `ignore`: patterns that are neither, e.g.
# the extrapolated time of a naive baseline.
BENCHMARKS = {
    "speed": {"script": "speed.py", "args": ["--runs", "3"], "file": "speed",
              "key": ["bench", "model", "variant"], "lower": ["latency_ms"], "higher": ["*GFLOP_s"]},
    "ops": {"script": "ops_speed.py", "args": [], "file": "ops_speed",
            "key": ["op", "rois", "output", "sampling_ratio", "boxes", "layout", "iou_threshold", "classes"],
            "lower": ["ms"]},
    "graph_merge": {"script": "graph_merge_speed.py", "args": [], "file": "graph_merge",
                    "key": ["measure", "setting", "size"], "lower": ["seconds", "merge_graph_seconds"]},
    "crf": {"script": "crf_speed.py", "args": [], "file": "crf_speed",
            "key": ["kind", "case", "version"],
            "lower": ["seconds_min", "seconds_min.*", "setup_seconds_min", "per_iteration_seconds",
                      "new_seconds"]},
    "mask_rcnn": {"script": "mask_rcnn_inference.py", "args": [], "file": "mask_rcnn_inference",
                  "key": ["variant:fp32", "stage"], "lower": ["ms"]},
    "metrics": {"script": "metrics_speed.py", "args": [], "file": "metrics_speed",
                "key": ["bench", "classes", "dtype"], "lower": ["after_ms_per_MP"]},
    "deform_conv": {"script": "deform_conv_speed.py", "args": [], "file": "deform_conv",
                    "key": ["bench", "shape"], "lower": ["new_forward_ms", "new_forward_backward_ms"]},
}


def flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def key_of(record: dict, fields: list[str]) -> str:
    parts = []
    for field in fields:
        name, _, default = field.partition(":")
        value = record.get(name, default or None)
        if value is not None:
            parts.append(f"{name}={json.dumps(value)}")
    return " ".join(parts)


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def committed(path: Path) -> list[dict]:
    """The results file as committed at HEAD (empty when it is new)."""
    rel = path.relative_to(ROOT).as_posix()
    proc = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True)
    return read_jsonl(proc.stdout) if proc.returncode == 0 else []


def compare(name: str, spec: dict, old: list[dict], new: list[dict], tolerance: float) -> tuple[list[str], int]:
    """Lines for the measurements that got slower, and how many fields were compared."""
    before = {key_of(r, spec["key"]): flatten(r) for r in old}
    slower, compared = [], 0
    for record in new:
        key = key_of(record, spec["key"])
        if key not in before:
            continue
        for field, value in flatten(record).items():
            old_value = before[key].get(field)
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not isinstance(old_value, (int, float))
                    or old_value <= 0 or matches(field, spec.get("ignore", []))):
                continue
            lower, higher = matches(field, spec.get("lower", [])), matches(field, spec.get("higher", []))
            if not (lower or higher):
                continue
            compared += 1
            ratio = value / old_value
            if (lower and ratio > 1 + tolerance) or (higher and ratio < 1 / (1 + tolerance)):
                slower.append(f"slower: {name} [{key}] {field}: {old_value:g} -> {value:g} ({ratio:.2f}x)")
    return slower, compared


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(name: str, spec: dict, tag: str) -> tuple[Path, list[dict]] | None:
    cmd = [sys.executable, str(HERE / spec["script"]), *spec["args"]]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"   FAILED (exit {proc.returncode}); {spec['file']} results kept as they were:\n{proc.stderr[-2000:]}")
        return None
    records = read_jsonl(proc.stdout)
    path = RESULTS / f"{spec['file']}_{tag}.jsonl"
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    print(f"   {len(records)} measurements -> {path.relative_to(ROOT)}", flush=True)
    return path, records


# ---- docs tables ---------------------------------------------------------------------------------------

def load(spec_name: str, tag: str) -> list[dict]:
    path = RESULTS / f"{BENCHMARKS[spec_name]['file']}_{tag}.jsonl"
    return read_jsonl(path.read_text()) if path.exists() else []


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def docs_section(tag: str) -> str:
    """Markdown from the results files only."""
    out = []
    speed = load("speed", tag)
    peak = next((r for r in speed if r.get("bench") == "matmul_peak"), None)
    if peak:
        out.append(f"Machine: {peak['cpu']}, {peak['threads']} threads, torch {peak['torch']}. Matmul peak "
                   f"(2048x2048, same threads): **{peak['fp32_GFLOP_s']} GFLOP/s fp32, {peak['bf16_GFLOP_s']} "
                   f"GFLOP/s bf16** (`benchmarks/results/speed_{tag}.jsonl`).")
    rows = {}
    for r in speed:
        if r.get("bench") == "inference":
            row = rows.setdefault(r["model"], {"GFLOPs": r["GFLOPs_per_image"]})
            row[r["variant"]] = r
    if rows:
        out.append("\n### Semantic models: inference, one 360x480 image\n\n`python benchmarks/speed.py --runs 3`")
        body = []
        for model, row in rows.items():
            fp, bf = row.get("fp32"), row.get("bf16+channels_last")
            body.append([f"`{model}`", row["GFLOPs"], fp and fp["latency_ms"],
                         fp and round(100 * fp["fraction_of_matmul_peak"]), bf and bf["latency_ms"],
                         bf and round(100 * bf["fraction_of_matmul_peak"])])
        out.append(table(["model", "GFLOPs / image", "fp32 ms", "% of fp32 peak", "bf16 + channels_last ms",
                          "% of bf16 peak"], body))
    metrics = load("metrics", tag)
    if metrics:
        out.append("\n### `SemanticMetrics.update`, one 2048x1024 frame, 10% ignored pixels\n\n"
                   "`python benchmarks/metrics_speed.py` (before: the previous update, kept in the script)")
        out.append(table(["classes", "input dtype", "before ms / MP", "after ms / MP", "speed-up", "same matrix"],
                         [[r["classes"], r["dtype"], r["before_ms_per_MP"], r["after_ms_per_MP"], r["speedup"],
                           r["same_confusion"]] for r in metrics]))
    deform = load("deform_conv", tag)
    if deform:
        out.append("\n### Deformable convolution against `F.conv2d` of the same shape (3x3, padding 1)\n\n"
                   "`python benchmarks/deform_conv_speed.py` (before: the previous implementation, kept in the "
                   "script; max |difference| of outputs and gradients in the results file)")
        out.append(table(["N, C_in, C_out, H, W", "conv2d fwd ms", "deform fwd ms", "fwd ratio", "before",
                          "conv2d fwd+bwd ms", "deform fwd+bwd ms", "fwd+bwd ratio", "before"],
                         [[", ".join(map(str, r["shape"])), r["conv2d_forward_ms"], r["new_forward_ms"],
                           r["new_over_conv_forward"], r["old_over_conv_forward"], r["conv2d_forward_backward_ms"],
                           r["new_forward_backward_ms"], r["new_over_conv_forward_backward"],
                           r["old_over_conv_forward_backward"]] for r in deform]))
    crf = [r for r in load("crf", tag) if r.get("kind") == "before_after"]
    if crf:
        out.append("\n### Dense CRF (`dense_crf`, 5 iterations, DeepLab's defaults)\n\n"
                   "`python benchmarks/crf_speed.py` (before: `benchmarks/baselines/crf_v0.py`)")
        out.append(table(["image", "labels", "before s", "after s", "speed-up", "max abs dQ", "same argmax"],
                         [[f"{r['size'][1]}x{r['size'][0]}", r["labels"], r["v0_seconds"], r["new_seconds"],
                           r["speedup"], f"{r['max_abs_dq']:.1e}", f"{100 * r['argmax_agreement']:.2f}%"]
                          for r in crf]))
    mask = load("mask_rcnn", tag)
    totals = [r for r in mask if r.get("stage", "").startswith("total")]
    if totals:
        size = totals[0]["size"]
        out.append(f"\n### Mask R-CNN R50-FPN inference, one {size[0]}x{size[1]} image, "
                   f"{totals[0]['proposals']} proposals, {totals[0]['detections']} detections\n\n"
                   "`python benchmarks/mask_rcnn_inference.py` (v0: the previous forward, kept in the script)")
        stages = {}
        for r in mask:
            if not r["stage"].startswith("total"):
                stages.setdefault(r["stage"], {})[r.get("variant", "fp32")] = r["ms"]
        out.append(table(["stage", "fp32 ms", "bf16 ms"], [[s, v.get("fp32"), v.get("bf16")] for s, v in stages.items()]))
        out.append(table(["variant", "total ms", "speed-up vs v0", "agreement"],
                         [[t.get("variant", "fp32"), t["ms"], t.get("speedup_vs_v0"), json.dumps(t.get("agreement"))]
                          for t in totals]))
    ops = [r for r in load("ops", tag) if "op" in r]
    if ops:
        out.append("\n### Detection operators\n\n`python benchmarks/ops_speed.py`")
        out.append(table(["op", "case", "ms", "naive ms", "speed-up"],
                         [[r["op"], ", ".join(f"{k} {r[k]}" for k in ("rois", "output", "sampling_ratio", "boxes",
                                                                          "layout", "iou_threshold", "classes") if k in r),
                           r["ms"], r.get("naive_ms", r.get("naive_ms_extrapolated")), r.get("speedup")] for r in ops]))
    merge = [r for r in load("graph_merge", tag) if r.get("measure") == "graph_merge"]
    if merge:
        out.append("\n### Affinity graph merge\n\n`python benchmarks/graph_merge_speed.py`")
        out.append(table(["setting", "size", "seconds", "instances found / in the ground truth"],
                         [[r["setting"], "x".join(map(str, r["size"])), r["seconds"],
                           f"{r['gt_recovered']} / {r['gt_instances']}"] for r in merge]))
    return "\n\n".join(out)


def write_docs(tag: str) -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS}: the markers {BEGIN} and {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = (f"{BEGIN}\n<!-- generated by `python benchmarks/run_all.py --write-docs` from "
            f"benchmarks/results/*_{tag}.jsonl; do not edit by hand -->\n\n{docs_section(tag)}\n\n{END}")
    write_atomic(DOCS, head + body + tail)
    print(f"wrote the tables of {DOCS.relative_to(ROOT)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    p.add_argument("--no-run", action="store_true", help="do not run: compare the results on disk with HEAD's")
    p.add_argument("--write-docs", action="store_true", help="then regenerate docs/performance.md's tables")
    p.add_argument("--tolerance", type=float, default=0.15, help="relative change that counts as slower")
    p.add_argument("--tag", default="2cpu_epyc", help="machine tag in the results file names")
    args = p.parse_args()
    names = args.only or list(BENCHMARKS)
    slower, compared, ran = [], 0, []
    start, load_before = time.time(), os.getloadavg()[0]
    for name in names:
        spec = BENCHMARKS[name]
        if args.no_run:
            path = RESULTS / f"{spec['file']}_{args.tag}.jsonl"
            done = (path, read_jsonl(path.read_text())) if path.exists() else None
        else:
            done = run(name, spec, args.tag)
            if done is None:
                slower.append(f"failed: {name}")
            else:
                ran.append(name)
        if done is not None:
            lines, n = compare(name, spec, committed(done[0]), done[1], args.tolerance)
            slower += lines
            compared += n
    if ran:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        log = RESULTS / f"run_all_{args.tag}.jsonl"
        entry = {"benchmarks": ran, "commit": commit, "seconds": round(time.time() - start, 1),
                 "loadavg_1min_before": round(load_before, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2),
                 "tolerance": args.tolerance, "slower": slower}
        write_atomic(log, (log.read_text() if log.exists() else "") + json.dumps(entry) + "\n")
    if args.write_docs:
        write_docs(args.tag)
    print(f"\n{compared} times compared with the committed results (tolerance {args.tolerance:.0%}); "
          f"{len(slower)} slower or failed")
    for line in slower:
        print(line)
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
