"""Load on `seglab serve`: N concurrent clients for a fixed time against the shipped CamVid model, over
loopback only. Prints one JSON line per server setting: requests/s, latency percentiles (p50/p95/p99),
answers refused with 503 (the queue limit at work), errors (anything else that is not a 200), and the mean
batch the server formed; then the speed-up batching gives (requests/s with batching over without).

Each setting starts its own `seglab serve` process (`python -m seglab serve --port 0`), so the server
and the clients do not share an interpreter. The clients post a CamVid validation image (../shared,
else a generated 360x480 picture) as raw bytes and ask for the JSON reply. Bounded: at most
`--seconds` per setting and `--max-requests` requests in all per setting.

    python benchmarks/serve_load.py                                  # 4 clients, 30 s per setting
    python benchmarks/serve_load.py --clients 8 --seconds 20 --overload   # also: more clients than the queue holds
    python benchmarks/serve_load.py --forward       # also: the model's own forward pass, batched vs one by one
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from speed import cpu_name  # benchmarks/speed.py (the script's folder is on sys.path)

HOST = "127.0.0.1"  # loopback only
SHARED_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid" / "val" / "0016E5_07959.png"


def test_image() -> tuple[bytes, str]:
    if SHARED_IMAGE.is_file():
        return SHARED_IMAGE.read_bytes(), SHARED_IMAGE.name
    from PIL import Image

    rng = np.random.default_rng(0)
    img = np.zeros((360, 480, 3), np.uint8)
    img[:150] = (128, 128, 128)
    img[150:] = (128, 64, 128)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue(), "generated 360x480"


class Server:
    """`seglab serve` in a child process on a port the system picks."""

    def __init__(self, model: str, extra: list[str], threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, "-m", "seglab", "serve", "--model", model, "--host", HOST,
                                      "--port", "0", "--device", "cpu", "--no-access-log", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline, lines = time.monotonic() + 180, []
        self.port = None
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("seglab serve did not start:\n" + "".join(lines))
            lines.append(line)
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            self.port = int(found.group(1)) if found else None
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client(port: int, data: bytes, stop_at: float, budget: list, lock: threading.Lock, out: list) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    while time.monotonic() < stop_at:
        with lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=data, headers={"Content-Type": "image/png"})
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as e:
            status, body = f"{type(e).__name__}", b""
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=300)
        latency = time.perf_counter() - t0
        batch = json.loads(body)["timing"]["batch"] if status == 200 else None
        out.append((status, latency, batch))
        if status == 503:
            time.sleep(0.05)  # a polite client backs off a little (the header says how long; we probe the limit)
    conn.close()


def drive(port: int, data: bytes, *, clients: int, seconds: float, max_requests: int) -> dict:
    """`clients` threads posting `data` to the server on `port` for `seconds` (at most `max_requests` in
    all): requests/s, latency percentiles of the answered ones, 503s, errors and the mean batch.
    (tests/serve/test_serve_load.py runs this against an in-process server.)"""
    results: list = []
    lock, budget = threading.Lock(), [max_requests]
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(port, data, start + seconds, budget, lock, results))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    ok = [r for r in results if r[0] == 200]
    lat = sorted(1000 * r[1] for r in ok)
    pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if lat else (lambda q: None)
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(results), "ok": len(ok),
            "rejected_503": sum(r[0] == 503 for r in results),
            "errors": sum(r[0] not in (200, 503) for r in results),
            "requests_per_s": round(len(ok) / elapsed, 3), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_batch": round(statistics.mean(r[2] for r in ok), 2) if ok else None}


def run_setting(args, data: bytes, name: str, clients: int, extra: list[str]) -> dict:
    server = Server(args.model, extra, args.threads)
    try:
        for _ in range(2):  # warm-up: first-call allocations are not part of the measurement
            conn = http.client.HTTPConnection(HOST, server.port, timeout=300)
            conn.request("POST", "/predict", body=data, headers={"Content-Type": "image/png"})
            assert conn.getresponse().status == 200
            conn.close()
        stats = drive(server.port, data, clients=clients, seconds=args.seconds, max_requests=args.max_requests)
    finally:
        server.stop()
    return {"bench": "serve_load", "setting": name, "model": args.model, "server_args": " ".join(extra), **stats}


def forward_batching(args, data: bytes, runs: int = 3) -> dict:
    """What batching can give the model itself here: images/s of the engine's predictor on a batch of
    `--clients` copies of the image against one at a time (`probabilities`, the stored TTA included)."""
    import torch
    from PIL import Image

    from seglab.engine.predict import load_predictor

    torch.set_num_threads(args.threads)
    _, predictor, _ = load_predictor(args.model, device="cpu")
    x = predictor.normalize(np.array(Image.open(io.BytesIO(data)).convert("RGB")))[None]
    rates = {}
    for n in (1, args.clients):
        batch = x.repeat(n, 1, 1, 1)
        predictor.probabilities(batch)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            predictor.probabilities(batch)
            times.append(time.perf_counter() - t0)
        rates[n] = n / statistics.median(times)
    return {"bench": "serve_load", "setting": "model forward", "batch": args.clients,
            "images_per_s_batch1": round(rates[1], 3), "images_per_s_batched": round(rates[args.clients], 3),
            "speedup": round(rates[args.clients] / rates[1], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bisenetv2.camvid")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0, help="per setting")
    p.add_argument("--max-requests", type=int, default=2000, help="per setting")
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2, help="the server's OMP threads")
    p.add_argument("--overload", action="store_true",
                   help="also run with a queue limit of half the clients: 503s, and still no errors")
    p.add_argument("--forward", action="store_true",
                   help="also time the model's forward pass on a batch against one image at a time (in process)")
    args = p.parse_args()
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 600:
        p.error("--clients must be 1..64 and --seconds 0..600")
    data, source = test_image()
    print(json.dumps({"bench": "serve_load", "machine": cpu_name(), "cpus": os.cpu_count(), "threads": args.threads,
                      "image": source, "bytes": len(data)}), flush=True)
    if args.forward:
        print(json.dumps(forward_batching(args, data)), flush=True)
    queue = str(max(32, 2 * args.clients))
    settings = [("no batching", args.clients, ["--max-batch", "1", "--queue-limit", queue]),
                ("batching", args.clients, ["--max-batch", str(args.clients), "--batch-wait-ms",
                                            str(args.batch_wait_ms), "--queue-limit", queue])]
    if args.overload:
        settings.append(("overload", args.clients, ["--max-batch", str(args.clients), "--batch-wait-ms",
                                                    str(args.batch_wait_ms), "--queue-limit", str(max(1, args.clients // 2))]))
    rows = {}
    for name, clients, extra in settings:
        rows[name] = run_setting(args, data, name, clients, extra)
        print(json.dumps(rows[name]), flush=True)
    off, on = rows["no batching"]["requests_per_s"], rows["batching"]["requests_per_s"]
    print(json.dumps({"bench": "serve_load", "speedup_batching": round(on / off, 3) if off else None,
                      "p50_ratio": round(rows["batching"]["p50_ms"] / rows["no batching"]["p50_ms"], 3)
                      if rows["no batching"]["p50_ms"] else None}), flush=True)


if __name__ == "__main__":
    main()
