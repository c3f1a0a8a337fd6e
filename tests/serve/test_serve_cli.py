"""`seglab serve` as a user starts it: the command, the shipped CamVid model by name, loopback by default,
a prediction over HTTP, Ctrl-C to stop; and one-line errors for bad arguments."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from seglab.cli import main
from serve_helpers import get_json, photo, png, post_image


@pytest.mark.slow
def test_seglab_serve_runs_the_shipped_model_on_loopback():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "seglab", "serve", "--model", "bisenetv2.camvid", "--port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, port, deadline = [], None, time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port, "".join(lines)
        assert "model 'bisenetv2.camvid': semantic, bisenetv2, 11 classes" in "".join(lines)
        status, health = get_json(port, "/health")
        assert status == 200 and health["models"] == ["bisenetv2.camvid"]
        status, _, body = post_image(port, png(photo(90, 120)))
        reply = json.loads(body)
        assert status == 200 and reply["width"] == 120 and {c["name"] for c in reply["classes"]} <= {
            "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args, words", [
    (["--model", "no_such_model"], "model file not found: no_such_model"),
    (["--model", "bisenetv2.camvid", "--workers", "0"], "--workers must be at least 1"),
    (["--model", "bisenetv2.camvid", "--max-batch", "0"], "--max-batch must be at least 1"),
    (["--model", "bisenetv2.camvid", "--score-thresh", "3"], "--score-thresh must be in [0, 1]"),
])
def test_bad_arguments_are_one_line_errors(args, words, capsys):
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_defaults_bind_to_loopback():
    from seglab.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m"])
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 8000, 1)


def test_without_the_extra_one_line_names_the_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", "--model", "bisenetv2.camvid"]) == 2
    err = capsys.readouterr().err.strip()
    assert "seglab serve needs uvicorn: pip install 'seglab[serve]'" in err and "\n" not in err
