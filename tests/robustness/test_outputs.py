"""Output failures and data loss: a full disk, a read-only folder or an output path that is a file is one
line saying what failed where and that the previous file is intact; a new run never replaces another
run's model; writes are atomic and durable (fsync of file and folder), temporary files of killed writes
are cleaned up, and a closed pipe is not an error."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.errors import OutputError
from seglab.utils.io import atomic_path, remove_orphan_temps, write_text_atomic

from robustness.conftest import assert_refused, run_cli, snapshot, temp_files, write_config
from robustness.faults import (
    one_error_line,
    run_read_only,
    run_with_file_size_limit,
    run_with_full_disk,
    seglab_command,
)


@pytest.fixture(scope="module")
def trained_run(tiny_synthetic, tmp_path_factory):
    """A config and a finished one-epoch run (best.safetensors, last.pt, ...) to break in copies."""
    tmp = tmp_path_factory.mktemp("outputs")
    cfg = write_config(tmp / "c.yaml", tiny_synthetic, tmp / "run")
    assert run_cli("train", cfg).status == 0
    return cfg, tmp / "run"


def _copy_run(trained_run, tmp_path, tiny_synthetic):
    import shutil

    _, run = trained_run
    new_run = tmp_path / "run"
    shutil.copytree(run, new_run)
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, new_run)
    return cfg, new_run


# --- a new run into a folder that holds one ---------------------------------------------------------

def test_a_new_run_does_not_replace_another_runs_model(trained_run, tiny_synthetic, tmp_path):
    cfg, run = _copy_run(trained_run, tmp_path, tiny_synthetic)
    before = snapshot(run)
    assert_refused(run_cli("train", cfg, "train.lr=0.5"), str(run), "--resume", "--overwrite")
    assert snapshot(run) == before
    assert run_cli("train", cfg, "--overwrite", "train.lr=0.02").status == 0
    assert (run / "best.safetensors").read_bytes() != before[str(run / "best.safetensors")]


# --- full disk -------------------------------------------------------------------------------------

def _assert_intact(run: Path, before: dict, *names: str) -> None:
    """`names` unchanged, no temporary file left, and best.safetensors complete (the resumed epoch may
    have written a better model before the checkpoint failed: a whole file, old or new)."""
    import seglab

    after = snapshot(run)
    for name in names:
        assert after[str(run / name)] == before[str(run / name)], f"{name} changed"
    assert not temp_files(run), temp_files(run)
    seglab.load_model(run / "best.safetensors")


def test_disk_full_while_training_keeps_the_previous_checkpoint(trained_run, tiny_synthetic, tmp_path):
    cfg, run = _copy_run(trained_run, tmp_path, tiny_synthetic)
    before = snapshot(run)
    size = (run / "last.pt").stat().st_size
    proc = run_with_full_disk(run, size // 2, seglab_command("train", cfg, "train.epochs=2", "--resume"))
    line = one_error_line(proc, "no space left on", "intact")
    assert "last.pt" in line or "best.safetensors" in line
    _assert_intact(run, before, "last.pt")


def test_file_size_limit_while_training_keeps_the_previous_checkpoint(trained_run, tiny_synthetic, tmp_path):
    """The same failure without mount namespaces: RLIMIT_FSIZE makes the checkpoint write fail."""
    cfg, run = _copy_run(trained_run, tmp_path, tiny_synthetic)
    before = snapshot(run)
    limit = (run / "last.pt").stat().st_size // 2
    proc = run_with_file_size_limit(limit, seglab_command("train", cfg, "train.epochs=2", "--resume"))
    one_error_line(proc, "file size limit", "intact")
    _assert_intact(run, before, "last.pt")


@pytest.mark.parametrize("command", ["eval", "pack", "predict"])
def test_disk_full_for_other_commands(command, trained_run, tiny_synthetic, photo, tmp_path):
    cfg, run = trained_run
    out = tmp_path / "out"
    out.mkdir()
    argv = {"eval": ["eval", cfg, "--checkpoint", run / "best.safetensors", "--out", out],
            "pack": ["pack", run / "best.safetensors", "--out", out / "packed.safetensors"],
            "predict": ["predict", "--checkpoint", run / "best.safetensors", photo, "--out", out]}[command]
    before = snapshot(run, photo.parent)
    proc = run_with_full_disk(out, 2048, seglab_command(*argv))
    one_error_line(proc, "no space left on", str(out))
    assert snapshot(run, photo.parent) == before
    assert not temp_files(out)


# --- read-only folders and paths that are files -------------------------------------------------------

def test_read_only_run_folder(trained_run, tiny_synthetic, tmp_path):
    cfg, run = _copy_run(trained_run, tmp_path, tiny_synthetic)
    before = snapshot(run)
    proc = run_read_only(run, seglab_command("train", cfg, "train.epochs=2", "--resume"))
    one_error_line(proc, str(run))
    assert snapshot(run) == before


def test_read_only_output_folder_for_predict_and_eval(trained_run, photo, tmp_path):
    cfg, run = trained_run
    out = tmp_path / "out"
    out.mkdir()
    for argv in (["predict", "--checkpoint", run / "best.safetensors", photo, "--out", out],
                 ["eval", cfg, "--checkpoint", run / "best.safetensors", "--out", out]):
        proc = run_read_only(out, seglab_command(*argv))
        one_error_line(proc, str(out))
        assert not any(out.iterdir())


def test_output_paths_that_are_files_or_folders(trained_run, tiny_synthetic, photo, tmp_path):
    cfg, run = trained_run
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    best = run / "best.safetensors"
    cases = [
        (["eval", cfg, "--checkpoint", best, "--out", a_file], [str(a_file)]),
        (["pack", best, "--out", tmp_path], [str(tmp_path), "is a folder"]),
        (["pack", best, "--out", a_file / "x.safetensors"], [str(a_file), "is a file"]),
        (["crf-search", cfg, "--checkpoint", best, "--grid", "bi_w=3", "--max-images", "1",
          "--out", a_file / "s.json"], [str(a_file), "is a file"]),
        (["train", cfg, f"train.out_dir={a_file}"], [str(a_file)]),
        (["train", cfg, f"train.out_dir={a_file}/run"], [str(a_file)]),
        (["predict", "--checkpoint", best, photo, "--out", a_file], [str(a_file)]),
    ]
    for argv, fragments in cases:
        assert_refused(run_cli(*argv), *fragments)
    assert a_file.read_text() == "keep me"
    assert not temp_files(tmp_path)


def test_output_error_is_an_oserror_for_python_callers(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(OSError) as info:
        write_text_atomic(a_file / "y.txt", "hello")
    assert isinstance(info.value, OutputError) and "is a file, not a folder" in str(info.value)


# --- atomic, durable writes ------------------------------------------------------------------------------

def test_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_text_atomic(tmp_path / "out.txt", "data")
    if Path("/proc/self/fd").is_dir():
        assert any(p.endswith(".tmp") for p in synced), synced  # the file, before its rename
        assert str(tmp_path) in synced, synced                 # then the folder's entry
    else:
        assert len(synced) == 2


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"previous" and not temp_files(tmp_path)


def _writer(path: Path, ready_fd: int) -> None:
    """A child process (forked: no interpreter start-up) that rewrites `path` until it is killed."""
    try:
        n = 0
        os.write(ready_fd, b"r")
        while True:
            n += 1
            write_text_atomic(path, str(n % 10) * 300_000)  # 300 KB per write: kills land inside writes
    finally:
        os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_during_writes_never_leaves_a_truncated_file_and_orphans_are_removed(tmp_path):
    target = tmp_path / "state.txt"
    rng = np.random.default_rng(0)
    for _ in range(8):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _writer(target, w)
        os.close(w)
        assert os.read(r, 1) == b"r"
        os.close(r)
        time.sleep(float(rng.uniform(0.01, 0.15)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        text = target.read_text() if target.exists() else ""
        assert text == "" or (len(text) == 300_000 and len(set(text)) == 1), f"truncated: {len(text)} characters"
    # the killed writers' temporary files are removed the first time a process writes into the folder
    remove_orphan_temps(tmp_path)  # (this process already wrote here once, as every new seglab process has not)
    write_text_atomic(target, "final")
    assert not temp_files(tmp_path) and target.read_text() == "final"


def test_orphans_of_other_processes_or_machines_are_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from seglab.utils.io import HOST_TAG as _HOST

    orphan = tmp_path / f".x.pt.seglab-{_HOST}-{dead.pid}.abc123.tmp"
    alive = tmp_path / f".x.pt.seglab-{_HOST}-{os.getppid()}.abc123.tmp"
    elsewhere = tmp_path / f".x.pt.seglab-otherhost-{dead.pid}.abc123.tmp"
    user_file = tmp_path / "notes.tmp"
    for p in (orphan, alive, elsewhere, user_file):
        p.write_text("x")
    assert remove_orphan_temps(tmp_path) == [orphan]
    assert alive.exists() and elsewhere.exists() and user_file.exists()


def test_write_hha_is_atomic(tmp_path, monkeypatch):
    from seglab.data import nyudv2

    root = tmp_path / "nyud"
    (root / "depth").mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.full((12, 16), 2500, np.uint16)).save(root / "depth" / f"{name}.png")
    calls = []

    def failing(depth, intrinsics):  # the second image fails half-way through
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.zeros((*depth.shape, 3), np.uint8)

    monkeypatch.setattr(nyudv2, "depth_to_hha", failing)
    with pytest.raises(KeyboardInterrupt):
        nyudv2.write_hha(root)
    assert sorted(p.name for p in (root / "hha").iterdir()) == ["a.png"]


# --- pipes ----------------------------------------------------------------------------------------------

def test_a_closed_pipe_is_not_an_error():
    """`seglab models | head -1`: the reader leaves; seglab stops quietly (141, as a SIGPIPE'd tool)."""
    proc = subprocess.Popen(seglab_command("models"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and err == "", err
