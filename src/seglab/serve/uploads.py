"""Uploads to images, in memory: the request body (raw bytes or one file of a multipart form) read up to
a size limit, then decoded with Pillow after checking the image's declared size.

Nothing here touches the disk: a multipart file part is collected into memory (Starlette's form parser
would spool parts over 1 MiB to a temporary file), and no file name a client sends is ever used as a
path. A decompression bomb (a small file declaring a huge canvas) is refused from its header, before
a pixel is decoded; only formats without external helpers are opened (Pillow's EPS plug-in, for one,
runs Ghostscript).
"""
from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The formats a photo comes in; Pillow reads each with its own code (no external programs).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")
MAX_MULTIPART_PARTS = 16


class RequestError(Exception):
    """A client mistake, answered with `status` and a one-line JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, " ".join(message.split()), headers or {}


async def read_body(declared_length: str | None, chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (the declared
    Content-Length is checked first, so an honest large upload is refused before it is sent)."""
    if declared_length is not None:
        if not declared_length.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared_length!r} is not a number of bytes")
        if int(declared_length) > limit:
            raise RequestError(413, f"upload of {int(declared_length)} bytes is larger than the server's limit of "
                                    f"{limit} bytes (seglab serve --max-upload-mb)")
    body, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"upload is larger than the server's limit of {limit} bytes "
                                    f"(seglab serve --max-upload-mb)")
        body.append(chunk)
    return b"".join(body)


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The bytes of the file part of a multipart/form-data body (the part with a file name, else the part
    named `image` or `file`); 400 when the body is not a well-formed form with one."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart/form-data upload without a boundary in its Content-Type")
    parts: list[dict] = []
    header: dict = {"field": b"", "value": b""}

    def begin():
        if len(parts) >= MAX_MULTIPART_PARTS:
            raise RequestError(400, f"multipart upload has more than {MAX_MULTIPART_PARTS} parts")
        parts.append({"headers": {}, "data": []})

    def header_end():
        parts[-1]["headers"][header["field"].lower()] = header["value"]
        header["field"], header["value"] = b"", b""

    callbacks = {
        "on_part_begin": begin,
        "on_part_data": lambda data, start, end: parts[-1]["data"].append(data[start:end]),
        "on_header_field": lambda data, start, end: header.__setitem__("field", header["field"] + data[start:end]),
        "on_header_value": lambda data, start, end: header.__setitem__("value", header["value"] + data[start:end]),
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except RequestError:
        raise
    except Exception as e:  # python-multipart's parse errors (and anything a hostile body provokes)
        raise RequestError(400, f"malformed multipart/form-data body ({type(e).__name__}: {e})") from None

    def disposition(part) -> dict:
        _, p = parse_options_header(part["headers"].get(b"content-disposition", b""))
        return p

    files = [p for p in parts if b"filename" in disposition(p)]
    named = [p for p in parts if disposition(p).get(b"name") in (b"image", b"file")]
    chosen = (files or named)[:1]
    if not chosen:
        raise RequestError(400, "multipart upload has no file part (send the image as a form field named "
                                "'image', e.g. curl -F image=@photo.jpg)")
    return b"".join(chosen[0]["data"])


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a phone photo stands upright); a corrupt EXIF block
    leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return img


def decode_image(data: bytes, *, max_pixels: int, in_channels: int = 3) -> np.ndarray:
    """An uploaded file's bytes -> H x W x `in_channels` uint8 array (RGB for 3, grayscale for 1), EXIF
    orientation applied, first frame of an animation. 415 for what is not an image of `IMAGE_FORMATS`,
    413 for more than `max_pixels` declared pixels, 400 for a truncated or corrupt file."""
    if not data:
        raise RequestError(400, "empty upload: send the bytes of an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise RequestError(415, f"upload is not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"image declares too many pixels for the server's limit of {max_pixels} "
                                f"(seglab serve --max-pixels; Pillow: {e})") from None
    except Exception as e:  # a broken header
        raise RequestError(400, f"cannot read the image header ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise RequestError(400, f"image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise RequestError(413, f"image is {w}x{h} = {w * h} pixels, more than the server's limit of {max_pixels} "
                                f"(seglab serve --max-pixels)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()  # decode now: truncated or corrupt data fails here
            img = upright(img)
            array = np.array(img.convert("RGB" if in_channels == 3 else "L"), dtype=np.uint8)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error ... on bad data
        raise RequestError(400, f"cannot decode the {img.format} image, the file is truncated or corrupt "
                                f"({type(e).__name__}: {e})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)
