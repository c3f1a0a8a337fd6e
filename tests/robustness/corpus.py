"""A corpus of hostile inputs, generated (nothing is stored in the repository): broken and bomb images,
odd image modes, hostile safetensors model files and pickles, malformed JSON and YAML, text that is not
UTF-8. Each generator writes into a folder and returns the path; the `*_CASES` dicts name the cases so
that the tests can be parametrised over them."""
from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG declaring width x height pixels, all zero: a few hundred KB that decode into
    gigabytes once converted (the zlib stream of zero rows compresses about 1000:1)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _rgb(h=16, w=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# --- images: name -> bytes of a file that is not a usable 8-bit RGB image -------------------------------
def image_cases() -> dict[str, bytes]:
    good = png_bytes(_rgb())
    jpeg = io.BytesIO()
    Image.fromarray(_rgb(), "RGB").convert("CMYK").save(jpeg, format="JPEG")
    return {
        "zero_bytes": b"",
        "random_bytes": np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "truncated_png": good[: len(good) // 2],
        "header_only_png": good[:33],
        "text_named_png": b"this is not an image\n",
        "bomb_12000x12000": bomb_png(12000, 12000),
        "rgba_png": png_bytes(np.zeros((16, 20, 4), np.uint8), "RGBA"),
        "16bit_png": png_bytes(np.zeros((16, 20), np.uint16)),
        "gif_png_suffix": _gif(),
    }


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 20), np.uint8), "L").save(buf, format="GIF")
    return buf.getvalue()


# --- label maps: name -> bytes of a label file that is not a usable class-index map -----------------------
def label_cases() -> dict[str, bytes]:
    return {
        "zero_bytes": b"",
        "truncated_png": png_bytes(np.zeros((16, 20), np.uint8))[:50],
        "rgb_colour_label": png_bytes(_rgb()),
        "bomb_12000x12000": bomb_png(12000, 12000),
        "values_out_of_range": png_bytes(np.full((16, 20), 7, np.uint8)),
        "other_size": png_bytes(np.zeros((10, 10), np.uint8)),
        "random_bytes": np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8).tobytes(),
    }


# --- safetensors model files ---------------------------------------------------------------------------
def safetensors_bytes(tensors: dict[str, np.ndarray] | None = None, metadata: dict | None = None,
                      header_extra: dict | None = None, dtype_names: dict[str, str] | None = None) -> bytes:
    """A safetensors file written by hand (so that the header can say anything)."""
    tensors = tensors or {}
    names = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64",
             np.dtype("int32"): "I32", np.dtype("uint8"): "U8"}
    header: dict = {}
    blobs, offset = [], 0
    for k, a in tensors.items():
        data = np.ascontiguousarray(a).tobytes()
        header[k] = {"dtype": (dtype_names or {}).get(k, names[a.dtype]), "shape": list(a.shape),
                     "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def model_file_cases(valid: Path) -> dict[str, bytes]:
    """Hostile variants of the valid model file `valid` (a 6-class tiny U-Net)."""
    from safetensors import safe_open

    with safe_open(str(valid), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["seglab"])
    data = valid.read_bytes()
    first = next(iter(tensors))
    cls_key = next(k for k in reversed(list(tensors)) if k.endswith("weight"))

    def with_meta(**changes) -> bytes:
        m = {**meta, **changes}
        m = {k: v for k, v in m.items() if v is not _DROP}
        return safetensors_bytes(tensors, {"seglab": json.dumps(m)})

    huge = dict(tensors)
    return {
        "zero_bytes": b"",
        "random_bytes": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated": data[: len(data) // 2],
        "header_length_huge": struct.pack("<Q", 2 ** 62) + data[8:],
        "header_not_json": struct.pack("<Q", 16) + b"{not json at all" + data[24:],
        "header_offsets_past_end": safetensors_bytes(
            {}, {"seglab": json.dumps(meta)},
            header_extra={first: {"dtype": "F32", "shape": [10 ** 6], "data_offsets": [0, 4 * 10 ** 6]}}),
        "no_seglab_metadata": safetensors_bytes(tensors, {"other": "x"}),
        "metadata_not_json": safetensors_bytes(tensors, {"seglab": "{'name': 'unet'"}),
        "metadata_a_list": safetensors_bytes(tensors, {"seglab": json.dumps([1, 2, 3])}),
        "metadata_deeply_nested": safetensors_bytes(tensors, {"seglab": "[" * 100000 + "]" * 100000}),
        "name_unknown": with_meta(name="no_such_model"),
        "name_not_a_string": with_meta(name=42),
        "num_classes_string": with_meta(num_classes="6"),
        "num_classes_bool": with_meta(num_classes=True),
        "num_classes_negative": with_meta(num_classes=-3),
        "num_classes_huge": with_meta(num_classes=4_000_000_000),
        "kwargs_a_list": with_meta(kwargs=[1, 2]),
        "kwargs_wrong_type": with_meta(kwargs={"base_channels": "four"}),
        "kwargs_huge_width": with_meta(kwargs={"base_channels": 1_000_000}),
        "kwargs_unknown": with_meta(kwargs={"base_channels": 4, "no_such_argument": 1}),
        "kwargs_names_a_file": with_meta(kwargs={"base_channels": 4, "backbone_weights": "/etc/passwd"}),
        "classes_wrong_length": with_meta(classes=["a", "b"]),
        "classes_not_strings": with_meta(classes=[1, 2, 3, 4, 5, 6]),
        "palette_bad_colour": with_meta(palette=[[0, 0, 999]] * 6),
        "mean_strings": with_meta(mean=["a", "b", "c"]),
        "std_zero": with_meta(std=[0, 0, 0]),
        "mean_std_lengths_differ": with_meta(mean=[0.5], std=[0.5, 0.5, 0.5]),
        "inference_bad": with_meta(inference={"slide": {"crop": [0, 0], "stride": [0, 0]}}),
        "inference_huge_tta": with_meta(inference={"tta": {"flip": True, "scales": [1000.0]}}),
        "other_architecture": with_meta(name="fcn32s_vgg16"),
        "tensor_missing": safetensors_bytes({k: v for k, v in tensors.items() if k != first},
                                            {"seglab": json.dumps(meta)}),
        "tensor_extra": safetensors_bytes({**tensors, "extra.weight": np.zeros(3, np.float32)},
                                          {"seglab": json.dumps(meta)}),
        "tensor_wrong_shape": safetensors_bytes({**huge, cls_key: np.zeros((1, 1), np.float32)},
                                                {"seglab": json.dumps(meta)}),
        "tensor_int_dtype": safetensors_bytes({**tensors, first: tensors[first].astype(np.int32)},
                                              {"seglab": json.dumps(meta)}),
    }


_DROP = object()


# --- pickles and .pt files -----------------------------------------------------------------------------
class _RunsCode:
    """A pickle whose loading would run a shell command (it must never be loaded)."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/seglab_pickle_executed",))


def pickle_cases() -> dict[str, bytes]:
    import torch

    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}}, buf)
    good = buf.getvalue()
    evil = io.BytesIO()
    torch.save({"model": _RunsCode()}, evil)
    return {
        "zero_bytes": b"",
        "random_bytes": np.random.default_rng(4).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "truncated_zip": good[: len(good) // 2],
        "plain_pickle_runs_code": pickle.dumps(_RunsCode()),
        "torch_zip_runs_code": evil.getvalue(),
        "not_a_dict": _torch_bytes([1, 2, 3]),
        "model_not_tensors": _torch_bytes({"model": {"w": "text"}}),
    }


def _torch_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# --- YAML configs ---------------------------------------------------------------------------------------
def yaml_bomb(levels: int = 9) -> str:
    """The billion-laughs document: 9 levels of 9 aliases (a few hundred bytes, 9^9 leaves expanded)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join(f"*{prev}" for _ in range(9)) + "]")
    return "\n".join(lines) + f"\nmodel: {{name: unet, kwargs: {{x: *{chr(ord('a') + levels - 1)}}}}}\n"


def text_cases(valid_text: str) -> dict[str, bytes]:
    """Encodings of a (valid) text file: which must be read, which refused."""
    return {
        "utf8": valid_text.encode("utf-8"),
        "utf8_bom": b"\xef\xbb\xbf" + valid_text.encode("utf-8"),
        "utf16_bom": valid_text.encode("utf-16"),               # Windows "Unicode": read
        "latin1": (valid_text + "# caf\xe9\n").encode("latin-1"),  # refused with the byte and offset
        "utf16_no_bom": valid_text.encode("utf-16-le"),          # refused (NUL bytes)
        "binary": b"\x00\x01\x02\xff\xfe" * 20,
    }


READABLE_ENCODINGS = ("utf8", "utf8_bom", "utf16_bom")


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
