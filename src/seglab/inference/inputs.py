"""What `seglab predict` reads and where its outputs go.

- Inputs are image files, video files and folders; folders are walked recursively (sorted, hidden
  files skipped) and their structure is mirrored under the output folder: `photos/a/x.jpg` predicted
  with `--out o` writes `o/a/x.png`, `o/a/x_overlay.png`.
- Outputs never overwrite inputs: an input file inside the output folder is refused, and a folder walk
  skips the output folder (so `seglab predict photos --out photos/pred` can be run again).
- Outputs never overwrite each other: two inputs whose output files share a name (`a.png` and
  `a_overlay.png` with the semantic writer: `a`'s overlay is `a_overlay`'s label map) are refused before
  anything is written (`check_output_names`, with the writer's `output_suffixes`).
- Without `--out`, outputs go to a new numbered folder `runs/predict/<n>`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import SeglabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


@dataclass(frozen=True)
class InputFile:
    """One input file and the name of its outputs: `key` (relative to the output folder, no suffix)."""
    path: Path
    key: PurePosixPath

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    @property
    def name(self) -> str:
        """The key as a string (`a/x` for `photos/a/x.jpg`): what result files and JSON entries name."""
        return str(self.key)

    def output(self, out_dir: Path, suffix: str) -> Path:
        """`out_dir/<key><suffix>`, e.g. output(o, "_overlay.png") -> o/a/x_overlay.png."""
        return Path(out_dir) / self.key.parent / f"{self.key.name}{suffix}"

    @classmethod
    def of(cls, item: InputFile | str | os.PathLike) -> InputFile:
        return item if isinstance(item, InputFile) else cls(Path(item), PurePosixPath(Path(item).stem))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _walk(folder: Path, skip: Path | None) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or (root_path / d).resolve() != skip))
        found += [root_path / f for f in sorted(files) if not f.startswith(".")
                  and Path(f).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    return found


def collect_inputs(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike | None = None) -> list[InputFile]:
    """Files and folders -> InputFiles (folders walked recursively, their structure kept in the keys).
    A missing path, an empty folder, two inputs with the same output name, or an input inside
    `out_dir` is a one-line error."""
    out = Path(out_dir).resolve() if out_dir is not None else None
    items: list[InputFile] = []
    for entry in inputs:
        p = Path(entry)
        if p.is_dir():
            if out is not None and _inside(p.resolve(), out):
                raise SeglabError(f"{p}: input folder is (or lies inside) the output folder {out_dir}; predictions "
                                  f"could overwrite its images: choose another --out")
            found = _walk(p, out)
            if not found:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
                raise SeglabError(f"{p}: folder has no images or videos ({kinds}), subfolders included")
            items += [InputFile(f, PurePosixPath(f.relative_to(p).with_suffix("").as_posix())) for f in found]
        elif p.is_file():
            if out is not None and _inside(p.resolve(), out):
                raise SeglabError(f"{p}: input lies inside the output folder {out_dir}; predictions could "
                                  f"overwrite it: choose another --out")
            items.append(InputFile(p, PurePosixPath(p.stem)))
        else:
            raise SeglabError(f"input not found: {p}")
    seen: dict[PurePosixPath, Path] = {}
    for item in items:
        if item.key in seen:
            raise SeglabError(f"{seen[item.key]} and {item.path} would write outputs of the same name "
                              f"({item.key}); predict them into different --out folders")
        seen[item.key] = item.path
    return items


def check_output_names(items: Iterable[InputFile], suffixes: Iterable[str], *, save_frames: bool = False) -> None:
    """Refuse two inputs that would write the same output file: an image writes `<key><suffix>` for each of
    the writer's `suffixes`, a video `<key>_overlay.mp4` and, with `save_frames`, files under `<key>/`."""
    suffixes = tuple(suffixes)
    written: dict[str, Path] = {}
    frame_folders: dict[PurePosixPath, Path] = {}
    items = list(items)
    for item in items:
        names = [f"{item.key}_overlay.mp4"] if item.is_video else [f"{item.key}{s}" for s in suffixes]
        if item.is_video and save_frames:
            frame_folders[item.key] = item.path
        for name in names:
            if name in written:
                raise SeglabError(f"{written[name]} and {item.path} would both write {name} in the output folder "
                                  f"(one's output is named like the other's); rename one or predict them into "
                                  f"different --out folders")
            written[name] = item.path
    for item in items:
        for folder, video in frame_folders.items():
            if item.path != video and folder in item.key.parents:
                raise SeglabError(f"{item.path} would be written into {folder}/, where --save-frames writes the "
                                  f"frames of {video}; rename one or predict them into different --out folders")


def default_out_dir(root: str | os.PathLike = "runs/predict") -> Path:
    """A new numbered folder `runs/predict/<n>` (one more than the highest number there)."""
    root = Path(root)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return root / str(max(taken, default=0) + 1)
