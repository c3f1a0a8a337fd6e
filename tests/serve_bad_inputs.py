"""Malformed uploads for the `seglab serve` tests: not images, truncated files, decompression bombs
(small files declaring huge canvases) in several formats, and seeded random corruptions of real ones."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring `width` x `height` RGB pixels, with a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + png_chunk(b"IEND", b""))


def gif_bomb() -> bytes:
    """A GIF whose logical screen is 65535 x 65535."""
    return (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b",\0\0\0\0" + struct.pack("<HH", 65535, 65535)
            + b"\0\x02\x02\x44\x01\0;")


def bmp_bomb() -> bytes:
    """A BMP header declaring 60000 x 60000 pixels, 24 bits."""
    info = struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\0" * 16


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def bad_input(kind: str, good_png: bytes) -> bytes:
    return {"png": good_png, "text": b"hello, this is not an image\n", "empty": b"",
            "truncated": good_png[: len(good_png) // 2], "bomb": png_bomb()}[kind]


def corruptions(good: bytes, count: int, seed: int) -> list[bytes]:
    """`count` corrupted copies of `good`: bytes flipped, spans deleted or repeated, cut short."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        data = bytearray(good)
        kind = i % 4
        if kind == 0:
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            a = int(rng.integers(8, len(data)))
            del data[a:a + int(rng.integers(1, 64))]
        elif kind == 2:
            a = int(rng.integers(8, len(data) - 16))
            data[a:a] = data[a:a + int(rng.integers(1, 16))] * int(rng.integers(2, 50))
        else:
            data = data[: int(rng.integers(1, len(data)))]
        out.append(bytes(data))
    return out
