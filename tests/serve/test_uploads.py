"""Uploads to images, without a server: decoding (modes, EXIF orientation, limits before decoding) and the
in-memory multipart parser."""
import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from seglab.serve.uploads import RequestError, decode_image, multipart_file, read_body
from serve_bad_inputs import png_bomb


def encoded(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_modes_become_rgb_or_grayscale():
    rgba = Image.fromarray(np.full((5, 7, 4), (10, 20, 30, 40), np.uint8), "RGBA")
    out = decode_image(encoded(rgba), max_pixels=100)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and tuple(out[0, 0]) == (10, 20, 30)
    gray = decode_image(encoded(Image.new("L", (7, 5), 99)), max_pixels=100)
    assert gray.shape == (5, 7, 3) and (gray == 99).all()
    assert decode_image(encoded(rgba), max_pixels=100, in_channels=1).shape == (5, 7, 1)


def test_exif_orientation_is_applied():
    img = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = decode_image(encoded(img, "JPEG", exif=exif.tobytes(), quality=100), max_pixels=100)
    assert out.shape == (3, 2, 3), "a portrait photo stays portrait"


def test_the_pixel_limit_is_checked_on_the_header():
    with pytest.raises(RequestError) as e:
        decode_image(png_bomb(5000, 4000), max_pixels=10_000_000)
    assert e.value.status == 413 and "5000x4000 = 20000000 pixels" in e.value.message
    with pytest.raises(RequestError) as e:  # within the limit, the same file is then found truncated
        decode_image(png_bomb(5000, 4000), max_pixels=30_000_000)
    assert e.value.status == 400


def test_multipart_in_memory():
    body = (b'--q\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            b'--q\r\nContent-Disposition: form-data; name="upload"; filename="../../etc/passwd"\r\n'
            b"Content-Type: image/png\r\n\r\nPNGBYTES\r\n--q--\r\n")
    # the part with a file name is the upload; the name itself is never used (no path is opened)
    assert multipart_file(body, 'multipart/form-data; boundary="q"') == b"PNGBYTES"
    named = b'--q\r\nContent-Disposition: form-data; name="image"\r\n\r\nRAW\r\n--q--\r\n'
    assert multipart_file(named, "multipart/form-data; boundary=q") == b"RAW"
    with pytest.raises(RequestError, match="no file part"):
        multipart_file(b'--q\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--q--\r\n',
                       "multipart/form-data; boundary=q")


def test_read_body_limit():
    async def chunks(parts):
        for p in parts:
            yield p

    assert asyncio.run(read_body("6", chunks([b"abc", b"def"]), 6)) == b"abcdef"
    for length, parts in (("7", [b"abcdefg"]), (None, [b"abcd", b"efg"])):
        with pytest.raises(RequestError) as e:
            asyncio.run(read_body(length, chunks(parts), 6))
        assert e.value.status == 413
    with pytest.raises(RequestError, match="Content-Length 'x1' is not a number"):
        asyncio.run(read_body("x1", chunks([]), 6))
