"""Malformed requests against a real `seglab serve` server: corrupted images, decompression bombs in several
formats, broken multipart forms, odd queries and broken HTTP on raw sockets. Every answer is a client error
(or a prediction, when a corruption still decodes), never a 5xx, and the server keeps answering: after
all of it, /health is fine and a good image predicts the same labels as before."""
import json
import socket

import numpy as np
import pytest

from seglab.serve import build_app
from seglab.serve.app import ServeSettings
from serve_bad_inputs import bmp_bomb, corruptions, encoded, gif_bomb, png_bomb
from serve_helpers import ServerThread, decode_map, get_json, photo, png, post_image, request

CLIENT_ERRORS = {400, 404, 405, 411, 413, 415, 422}


def check_answer(status: int, headers: dict, body: bytes, what: str) -> int:
    assert status == 200 or status in CLIENT_ERRORS, f"{what}: status {status} {body[:200]!r}"
    if status != 200:
        error = json.loads(body)["error"]
        assert error and "\n" not in error, what
    return status


def raw_exchange(port: int, data: bytes, *, close_early: bool = False) -> bytes:
    """Send `data` on a fresh socket and return what comes back (empty when the server just closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def multipart(boundary: str, *parts: bytes, end: bool = True) -> bytes:
    body = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    return body + (f"--{boundary}--\r\n".encode() if end else b"")


@pytest.mark.slow
def test_malformed_requests_never_take_the_server_down(tiny_model_file):
    image = photo(40, 56, seed=3)
    good = png(image)
    settings = ServeSettings(max_upload_bytes=256 * 1024, max_pixels=4_000_000)
    with ServerThread(build_app([str(tiny_model_file)], device="cpu", settings=settings)) as s:
        status, _, body = post_image(s.port, good, "map=1")
        before = decode_map(json.loads(body)["map"])
        answered, corrupted = 0, []

        # corrupted PNG, JPEG, BMP, GIF and TIFF files (bytes flipped, spans cut or repeated, cut short)
        for fmt, count in (("PNG", 24), ("JPEG", 16), ("BMP", 6), ("GIF", 6), ("TIFF", 6)):
            for i, data in enumerate(corruptions(encoded(image, fmt), count, seed=len(fmt))):
                corrupted.append(check_answer(*post_image(s.port, data), what=f"corrupted {fmt} #{i}"))
                answered += 1
        # decompression bombs: small files declaring huge canvases; an empty canvas
        for name, data in (("png", png_bomb()), ("png 3000x3000", png_bomb(3000, 3000)), ("gif", gif_bomb()),
                           ("bmp", bmp_bomb()), ("png 0x0", png_bomb(0, 0))):
            status, headers, body = post_image(s.port, data)
            check_answer(status, headers, body, f"{name} bomb")
            assert status in (400, 413, 415), f"{name} bomb decoded: {status}"
            answered += 1
        # random bytes, with image-like and form content types
        rng = np.random.default_rng(7)
        for n in (1, 7, 100, 5000):
            noise = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            for ctype in ("image/png", "multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded"):
                check_answer(*request(s.port, "POST", "/predict", noise, {"Content-Type": ctype}), what=f"{n} bytes {ctype}")
                answered += 1
        # broken multipart forms
        file_part = b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + good
        forms = {
            "no closing boundary": multipart("b0", file_part, end=False),
            "wrong boundary": multipart("other", file_part),
            "headers only": b'--b0\r\nContent-Disposition: form-data; name="image"\r\n',
            "many parts": multipart("b0", *([b'Content-Disposition: form-data; name="x"\r\n\r\n1'] * 40)),
            "header soup": multipart("b0", b"X" * 20000 + b"\r\n\r\n" + good),
            "no disposition": multipart("b0", b"Content-Type: image/png\r\n\r\n" + good),
        }
        for what, body in forms.items():
            check_answer(*request(s.port, "POST", "/predict", body, {"Content-Type": "multipart/form-data; boundary=b0"}),
                         what=f"multipart: {what}")
            answered += 1
        # odd queries
        for query in ("%ff%fe=1", "model=%00", "model=" + "x" * 5000, "format=%E2%80%AE", "alpha=1e309",
                      "alpha=-0", "map=", "&&&", "model", "=1"):
            check_answer(*post_image(s.port, good, query), what=f"query {query[:40]}")
            answered += 1
        # broken HTTP on raw sockets: the server answers 4xx or closes the connection, nothing else
        raws = [b"GARBAGE\r\n\r\n", b"\x00\xff" * 100, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + good[:500],
                b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]
        for i, data in enumerate(raws):
            reply = raw_exchange(s.port, data, close_early=True)
            if reply:
                status = int(reply.split(b" ", 2)[1])
                assert status < 500, f"raw request #{i}: {reply[:200]!r}"
            answered += 1

        assert answered >= 95
        assert {200, 400} <= set(corrupted), "corruptions that still decode, and ones that do not"
        status, health = get_json(s.port, "/health")
        assert status == 200 and health["in_progress"] == 0
        status, _, body = post_image(s.port, good, "map=1")
        assert status == 200 and np.array_equal(decode_map(json.loads(body)["map"]), before)
