"""The load test of `seglab serve`, short: `benchmarks/serve_load.py`'s clients (its `drive`) against a real
server in this process (a tiny model, loopback). Below the queue limit every request is answered (no 503,
no error) and waiting requests are batched; above it the extra requests get 503 (never another error) and
the server is empty and answering afterwards. The figures in docs/serve.md come from the full benchmark."""
import importlib.util
import sys
from pathlib import Path

import pytest

from seglab.serve import build_app
from seglab.serve.app import ServeSettings
from serve_helpers import ServerThread, get_json, photo, png

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def serve_load():
    if not (BENCHMARKS / "serve_load.py").is_file():
        pytest.skip(f"benchmarks/serve_load.py not found at {BENCHMARKS} (an installed package without the repo)")
    sys.path.insert(0, str(BENCHMARKS))  # serve_load imports its neighbour speed.py
    try:
        spec = importlib.util.spec_from_file_location("serve_load", BENCHMARKS / "serve_load.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.mark.slow
def test_concurrent_clients_below_and_above_the_queue_limit(serve_load, tiny_model_file):
    data = png(photo(48, 64, seed=4))
    below = ServeSettings(max_batch=4, batch_wait_ms=20, queue_limit=8)
    with ServerThread(build_app([str(tiny_model_file)], device="cpu", settings=below)) as s:
        stats = serve_load.drive(s.port, data, clients=4, seconds=2, max_requests=120)
        assert stats["ok"] >= 8 and stats["errors"] == 0 and stats["rejected_503"] == 0, stats
        assert stats["mean_batch"] > 1, f"four clients at once: the server batches their requests ({stats})"
        assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
    above = ServeSettings(max_batch=2, batch_wait_ms=20, queue_limit=2)
    with ServerThread(build_app([str(tiny_model_file)], device="cpu", settings=above)) as s:
        stats = serve_load.drive(s.port, data, clients=8, seconds=2, max_requests=200)
        assert stats["ok"] >= 2 and stats["rejected_503"] >= 1 and stats["errors"] == 0, stats
        status, health = get_json(s.port, "/health")
        assert status == 200 and health["in_progress"] == 0
