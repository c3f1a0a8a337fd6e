"""Real distributed runs: two processes started by torchrun on the CPU (gloo), against one process with the
same global batch, and a 2-process run killed with SIGKILL mid-epoch, then resumed.

Tolerances (why a 2-process run is not bit-identical to one process):
- the sum over ranks of the gradients is computed in another order than the sum over one batch, so
  float32 rounding differs (relative 1e-6 per step); with SGD that stays below 1e-4 after a few steps;
- without `train.sync_bn` each rank normalises by the statistics of its own half batch: the loss curves and
  the learned parameters then differ by up to 1% (measured 0.2% and 0.08%), and the BatchNorm running
  statistics are rank 0's own, which is what BatchNorm without synchronisation means;
- with `train.sync_bn: true` the statistics cover the global batch and only the rounding remains;
- losses normalised by counts over the batch (instance models) are normalised per rank (see below).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from seglab.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

SEMANTIC = {"name": "unet", "kwargs": {"base_channels": 4}}
INSTANCE = {"name": "affinity_resnet18", "kwargs": {"width": 8, "fpn_channels": 16, "head_channels": 16,
                                                     "distances": [1, 2, 4]}}


def _write_cfg(path: Path, root, out, *, model=SEMANTIC, data="synthetic", crop=(48, 48), batch=2, **train):
    cfg = {"model": model,
           "data": {"name": data, "root": str(root), "crop_size": list(crop), "batch_size": batch,
                    "scale_range": [1.0, 1.0], "num_workers": 0},
           "train": {"epochs": 2, "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "out_dir": str(out),
                     "device": "cpu", **train}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(cfg: Path, *extra: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "seglab", "train", str(cfg), *extra]


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _one_process(cfg: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "seglab", "train", str(cfg)])


def _compare(one: Path, two: Path, *, loss_rtol: float, param_rtol: float, buffer_atol: float | None) -> None:
    """Loss curves within `loss_rtol`; learned parameters within `param_rtol` (relative L2 over all of them);
    buffers (BatchNorm running statistics) within `buffer_atol` when given."""
    a, b = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    la = [h["train_loss"] for h in a["history"]]
    lb = [h["train_loss"] for h in b["history"]]
    assert len(la) == len(lb) and la == pytest.approx(lb, rel=loss_rtol), (la, lb)
    assert b["world_size"] == 2 and a["world_size"] == 1
    params = {n for n, _ in _named_parameters(one)}
    diff = sum(float((a["model"][k] - b["model"][k]).float().pow(2).sum()) for k in params)
    norm = sum(float(a["model"][k].float().pow(2).sum()) for k in params)
    assert (diff / norm) ** 0.5 <= param_rtol, (diff / norm) ** 0.5
    if buffer_atol is not None:
        worst = max(float((a["model"][k].float() - b["model"][k].float()).abs().max()) for k in a["model"]
                    if k not in params and a["model"][k].is_floating_point())
        assert worst <= buffer_atol, worst


def _named_parameters(run: Path):
    import seglab

    return seglab.load_model(run / "best.safetensors").named_parameters()


# sync_bn: everything but rounding is the same. Without it each rank's BatchNorm sees half the batch: the
# learned parameters stay within 1% (measured 0.08%), the running statistics are rank 0's own.
@pytest.mark.parametrize("sync_bn,loss_rtol,param_rtol,buffer_atol", [(True, 1e-4, 1e-4, 1e-4),
                                                                      (False, 0.01, 0.01, None)])
def test_two_gloo_processes_train_like_one_with_the_same_global_batch(tiny_synthetic, tmp_path, sync_bn,
                                                                       loss_rtol, param_rtol, buffer_atol):
    one = _write_cfg(tmp_path / "one.yaml", tiny_synthetic, tmp_path / "one", batch=4, sync_bn=sync_bn)
    two = _write_cfg(tmp_path / "two.yaml", tiny_synthetic, tmp_path / "two", batch=2, sync_bn=sync_bn)
    _one_process(one)
    proc = _run(_torchrun(two))
    assert proc.stdout.count("training unet") == 1, "rank 0 alone prints"
    assert "2 processes" in proc.stdout
    _compare(tmp_path / "one", tmp_path / "two", loss_rtol=loss_rtol, param_rtol=param_rtol, buffer_atol=buffer_atol)
    # rank 0 alone wrote the outputs, and the model file is a plain one
    assert (tmp_path / "two" / "best.safetensors").is_file() and (tmp_path / "two" / "curves.png").is_file()


def test_two_gloo_processes_train_an_instance_model_like_one(tmp_path):
    from seglab.data import generate_synthetic

    root = generate_synthetic(tmp_path / "data", num_train=8, num_val=2, size=(64, 64), seed=1, workers=1)
    common = {"model": INSTANCE, "data": "synthetic_instances", "crop": (64, 64), "sync_bn": True, "epochs": 1}
    one = _write_cfg(tmp_path / "one.yaml", root, tmp_path / "one", batch=4, **common)
    two = _write_cfg(tmp_path / "two.yaml", root, tmp_path / "two", batch=2, **common)
    _one_process(one)
    _run(_torchrun(two))
    # Its losses are normalised by counts over the batch (balanced positive / negative affinity pairs, pixels
    # that are not ignored): under DDP each rank normalises by its own counts, as Detectron2's and
    # torchvision's detection losses do, so the numbers differ by about 1% (measured: loss 1.3%, parameters
    # 0.7%) even with synchronised BatchNorm.
    _compare(tmp_path / "one", tmp_path / "two", loss_rtol=0.03, param_rtol=0.02, buffer_atol=None)
    assert "val_mask_AP" in load_checkpoint(tmp_path / "two" / "last.pt")["history"][-1]


def test_kill_9_of_a_two_process_run_then_resume_gives_the_uninterrupted_weights(tiny_synthetic, tmp_path):
    kw = {"epochs": 4, "crop": (48, 64), "model": {"name": "unet", "kwargs": {"base_channels": 8}}}
    straight = _write_cfg(tmp_path / "a.yaml", tiny_synthetic, tmp_path / "a", **kw)
    killed = _write_cfg(tmp_path / "b.yaml", tiny_synthetic, tmp_path / "b", **kw)
    _run(_torchrun(straight))
    proc = subprocess.Popen(_torchrun(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    last = tmp_path / "b" / "last.pt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file():  # the first epoch is checkpointed: kill everything, mid-way through the second
            for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun starts its workers in their own sessions
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    epoch = load_checkpoint(last)["epoch"]
    assert epoch < 3, "the kill came after the last epoch"
    resumed = _run(_torchrun(killed, "--resume"))
    assert f"resumed from {last} at epoch {epoch + 2}/4" in resumed.stdout
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(last)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def test_resume_with_another_process_count_is_refused(tiny_synthetic, tmp_path):
    cfg = _write_cfg(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "c", epochs=1)
    _run(_torchrun(cfg))
    proc = subprocess.run([sys.executable, "-m", "seglab", "train", str(cfg), "train.epochs=2", "--resume"],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and "2 process(es)" in proc.stderr and "Traceback" not in proc.stderr


def test_two_gloo_processes_keep_the_same_weight_average_as_one(tiny_synthetic, tmp_path):
    """train.ema under DDP: every rank averages the same weights, so the average in last.pt matches a
    one-process run's (up to the rounding of the synchronised BatchNorm run above), and best.safetensors
    holds the average."""
    common = {"sync_bn": True, "ema": {"decay": 0.5}}
    one = _write_cfg(tmp_path / "one.yaml", tiny_synthetic, tmp_path / "one", batch=4, **common)
    two = _write_cfg(tmp_path / "two.yaml", tiny_synthetic, tmp_path / "two", batch=2, **common)
    _one_process(one)
    _run(_torchrun(two))
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] > 0
    ema_a, ema_b = a["ema"]["model"], b["ema"]["model"]
    floats = [k for k in ema_a if ema_a[k].is_floating_point()]
    diff = sum(float((ema_a[k] - ema_b[k]).pow(2).sum()) for k in floats)
    norm = sum(float(ema_a[k].pow(2).sum()) for k in floats)
    assert (diff / norm) ** 0.5 <= 1e-4
    assert any(not torch.equal(ema_b[k], b["model"][k]) for k in floats), "the average is not the trained weights"
    if b["best"]["epoch"] == len(b["history"]):
        import seglab

        best = seglab.load_model(tmp_path / "two" / "best.safetensors").state_dict()
        assert all(torch.equal(best[k], ema_b[k]) for k in floats)
