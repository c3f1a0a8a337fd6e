"""For the `seglab serve` tests (tests/serve/): a real uvicorn server on a free loopback port in a thread,
small HTTP helpers on the standard library, and tiny models saved as model files."""
from __future__ import annotations

import http.client
import io
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


class ServerThread:
    """`app` served by uvicorn on 127.0.0.1 (a port the OS picks) until `stop()`."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False, timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post_image(port: int, data: bytes, query: str = "", *, multipart: bool = False, timeout: float = 120,
               filename: str = "x.png"):
    """POST /predict with `data` as the raw body or as a multipart file part named `image`."""
    if multipart:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        body, headers = data, {"Content-Type": "application/octet-stream"}
    return request(port, "POST", f"/predict{'?' + query if query else ''}", body, headers, timeout=timeout)


def get_json(port: int, path: str):
    status, _, body = request(port, "GET", path)
    return status, json.loads(body)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A uint8 picture with some structure (blocks of colour plus noise)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 60, 40)
    img[h // 2:, : w // 2] = (30, 160, 90)
    img[h // 2:, w // 2:] = (40, 70, 210)
    return np.clip(img.astype(np.int16) + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)


def decode_map(m: dict) -> np.ndarray:
    import base64

    dtype = np.uint8 if m["dtype"] == "uint8" else np.dtype("<u2")
    return np.frombuffer(base64.b64decode(m["data"]), dtype).reshape(m["height"], m["width"])


def save_tiny_model(path: Path, name: str, *, num_classes: int, classes=None, inference=None, train_size=None,
                    **kwargs) -> Path:
    """A tiny untrained model of entrypoint `name` as a seglab model file (class names, palette, stored
    inference settings, the training images' size [h, w])."""
    import torch

    from seglab import hub
    from seglab.data.palettes import default_palette

    torch.manual_seed(0)
    model = hub.create_model(name, num_classes=num_classes, **kwargs)
    return hub.save_model(model, path, classes=classes or [f"class{i}" for i in range(num_classes)],
                          palette=[list(c) for c in default_palette(num_classes)],
                          extra={k: v for k, v in (("inference", inference), ("train_size", train_size)) if v} or None)
