"""Devices, precision and gradient accumulation in the one training loop, and what needs CUDA (skipped,
with the reason, where there is none)."""
from __future__ import annotations

import json

import pytest
import torch

import seglab
from seglab.cli import main
from seglab.config import config_from_dict
from seglab.engine import Runtime, resolve_device, train
from seglab.engine.checkpoint import load_checkpoint
from seglab.errors import SeglabError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here (CPU-only PyTorch build or no GPU)")


def _cfg(root, out, **train_kw):
    return config_from_dict({
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"name": "synthetic", "root": str(root), "crop_size": [48, 48], "batch_size": 4,
                 "scale_range": [1.0, 1.0], "num_workers": 0},
        "train": {"epochs": 1, "optimizer": "sgd", "lr": 0.02, "out_dir": str(out), "device": "cpu", **train_kw},
    })


def test_device_names_resolve_and_missing_devices_are_one_line_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(SeglabError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SeglabError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_cli_device_flag_reports_a_missing_gpu_in_one_line(tiny_synthetic, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing is missing")
    model = seglab.save_model(seglab.create_model("unet", num_classes=6, base_channels=4), tmp_path / "m.safetensors")
    image = sorted((tiny_synthetic / "images").glob("val_*.png"))[0]
    assert main(["predict", "--checkpoint", str(model), str(image), "--out", str(tmp_path / "o"),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda" in err and "CUDA is not available" in err
    assert not (tmp_path / "o").exists()


def test_fp16_training_keeps_its_gradient_scaler_in_the_checkpoint(tiny_synthetic, tmp_path):
    result = train(_cfg(tiny_synthetic, tmp_path / "run", precision="fp16", epochs=2), progress=False,
                   log=lambda m: None)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    state = load_checkpoint(result.last_path)
    assert state["scaler"] and state["scaler"]["scale"] > 0
    assert state["config"]["train"]["precision"] == "fp16"


def test_bf16_synonym_and_precision_run_the_same_autocast(tiny_synthetic, tmp_path):
    a = train(_cfg(tiny_synthetic, tmp_path / "a", bf16=True), progress=False, log=lambda m: None)
    b = train(_cfg(tiny_synthetic, tmp_path / "b", precision="bf16"), progress=False, log=lambda m: None)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    c = train(_cfg(tiny_synthetic, tmp_path / "c"), progress=False, log=lambda m: None)
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]  # fp32 differs from bf16


def test_accumulated_half_batches_follow_the_full_batch_schedule(tiny_synthetic, tmp_path):
    """Batch 2 x 2 accumulated steps = batch 4: the same number of optimizer steps and the same learning
    rates; the losses differ only through BatchNorm's half-batch statistics."""
    full = train(_cfg(tiny_synthetic, tmp_path / "full", epochs=2), progress=False, log=lambda m: None)
    acc_cfg = _cfg(tiny_synthetic, tmp_path / "acc", epochs=2, accumulate_steps=2)
    acc_cfg = acc_cfg.model_copy(update={"data": acc_cfg.data.model_copy(update={"batch_size": 2})})
    acc = train(acc_cfg, progress=False, log=lambda m: None)
    assert [h["iteration"] for h in acc.history] == [h["iteration"] for h in full.history] == [3, 6]
    assert [h["lr"] for h in acc.history] == [h["lr"] for h in full.history]
    for a, b in zip(acc.history, full.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)


def test_global_batch_larger_than_the_data_set_is_refused(tiny_synthetic, tmp_path):
    with pytest.raises(SeglabError, match="global batch"):
        train(_cfg(tiny_synthetic, tmp_path / "run", accumulate_steps=4), progress=False, log=lambda m: None)


def test_runtime_outside_torchrun_is_rank_0_of_1():
    rt = Runtime.create("cpu", "bf16")
    assert (rt.rank, rt.world_size, rt.is_main, rt.distributed) == (0, 1, True, False)
    assert list(rt.shard(5)) == [0, 1, 2, 3, 4] and rt.dtype == torch.bfloat16


@needs_cuda
def test_training_on_cuda_in_bf16_and_predicting_on_the_cpu(tiny_synthetic, tmp_path):
    result = train(_cfg(tiny_synthetic, tmp_path / "run", device="cuda", precision="bf16"), progress=False,
                   log=lambda m: None)
    state = load_checkpoint(result.last_path)  # map_location: the CPU
    assert all(t.device.type == "cpu" for t in state["model"].values())
    model = seglab.load_model(result.best_path, device="cpu")
    image = sorted((tiny_synthetic / "images").glob("val_*.png"))[0]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(result.best_path), str(image), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert (out / f"{image.stem}.png").is_file() and next(model.parameters()).device.type == "cpu"


@needs_cuda
def test_fp16_on_cuda_resumes_on_the_cpu(tiny_synthetic, tmp_path):
    cfg = _cfg(tiny_synthetic, tmp_path / "run", device="cuda", precision="fp16")
    train(cfg, progress=False, log=lambda m: None)
    lines: list[str] = []
    train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})}), resume=True,
          progress=False, log=lines.append, device="cpu")
    assert any(m.startswith("resumed from") for m in lines)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_train_compile_reports_its_time_and_falls_back_to_eager_when_it_fails(tiny_synthetic, tmp_path,
                                                                              monkeypatch):
    """torch.compile itself takes minutes on 2 cores (measured 144 s for this tiny U-Net), so the test swaps
    it for a stand-in: one that compiles to the same module, and one whose compiled module fails."""
    monkeypatch.setattr(torch, "compile", lambda net, **kw: net)
    lines: list[str] = []
    ok = train(_cfg(tiny_synthetic, tmp_path / "ok", compile=True), progress=False, log=lines.append)
    assert ok.history[0]["compile_s"] >= 0 and any(m.startswith("torch.compile: the first step") for m in lines)

    class Broken(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed\nwith details")

    monkeypatch.setattr(torch, "compile", lambda net, **kw: Broken())
    lines.clear()
    fallback = train(_cfg(tiny_synthetic, tmp_path / "fb", compile=True), progress=False, log=lines.append)
    message = next(m for m in lines if m.startswith("torch.compile failed"))
    assert "RuntimeError: backend compiler failed" in message and "\n" not in message
    assert fallback.history[0]["compile_s"] is None
    plain = train(_cfg(tiny_synthetic, tmp_path / "plain"), progress=False, log=lambda m: None)
    assert fallback.history[0]["train_loss"] == plain.history[0]["train_loss"]
