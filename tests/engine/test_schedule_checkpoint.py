
import pytest
import torch

from seglab.engine.checkpoint import load_checkpoint, save_checkpoint
from seglab.engine.schedule import build_optimizer, build_scheduler, poly_lambda
from seglab.errors import SeglabError


def test_poly_schedule_with_warmup():
    f = poly_lambda(100, power=0.9, warmup_iters=10, warmup_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx((1 - 0.05) ** 0.9 * 0.55)
    assert f(50) == pytest.approx(0.5 ** 0.9)
    assert f(100) == 0.0


def test_scheduler_drives_optimizer_lr():
    model = torch.nn.Conv2d(3, 4, 3)
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]  # no decay on the bias
    sched = build_scheduler(opt, 10, power=1.0)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_checkpoint_round_trip_loads_weights_only(tmp_path):
    state = {"model": {"w": torch.randn(3)}, "epoch": 4, "history": [{"epoch": 1, "train_loss": 0.5}]}
    path = save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 4
    assert loaded["history"] == state["history"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SeglabError, match="last.pt: cannot read checkpoint"):
        load_checkpoint(bad)
    bad.write_bytes(b"")  # a zero-byte file: the message must still be one line naming the file
    with pytest.raises(SeglabError, match="last.pt: cannot read checkpoint"):
        load_checkpoint(bad)
