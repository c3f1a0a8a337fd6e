"""A few hostile cases through a real `python -m seglab` process: the in-process tests cannot see what
reaches the terminal outside seglab's own error line (library warnings, interpreter messages at exit), so
these check the whole stderr."""
from __future__ import annotations

import os
import subprocess

import pytest

from robustness.conftest import write_config
from robustness.corpus import image_cases, model_file_cases, pickle_cases, write, yaml_bomb
from robustness.faults import one_error_line, seglab_command


def _run(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)  # library warnings as a user sees them
    return subprocess.run(seglab_command(*argv), capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("case", ["pickle", "bomb", "model", "yaml"])
def test_whole_stderr_is_one_line(case, tiny_synthetic, model_file, photo, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    if case == "pickle":  # torch warns about the pickle protocol before refusing it
        bad = write(tmp_path, "w.pt", pickle_cases()["plain_pickle_runs_code"])
        proc = _run("eval", cfg, "--checkpoint", bad, "--out", tmp_path / "o")
    elif case == "bomb":  # Pillow warns about large images before decoding them
        bad = write(tmp_path, "bomb.png", image_cases()["bomb_12000x12000"])
        proc = _run("predict", "--checkpoint", model_file, bad, "--out", tmp_path / "o")
    elif case == "model":
        bad = write(tmp_path, "m.safetensors", model_file_cases(model_file)["num_classes_huge"])
        proc = _run("predict", "--checkpoint", bad, photo, "--out", tmp_path / "o")
    else:
        bad = write(tmp_path, "bomb.yaml", yaml_bomb())
        proc = _run("train", bad)
    one_error_line(proc, str(bad))
    assert not (tmp_path / "o").exists()
