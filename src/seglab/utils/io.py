"""Atomic, durable file writing, and checked text / JSON readers.

Every output goes to a temporary file in the same folder (`.<name>.seglab-<host>-<pid>.<random>.tmp`),
is flushed to the disk (`fsync`), then renamed onto its name (`os.replace`) and the folder's entry is
flushed too: a killed process, a crash, a full disk or a power cut half-way through never leaves a
truncated checkpoint, PNG or JSON behind, and the previous file stays intact until the new one is
complete. A write that fails (disk full, read-only folder, an output path that is a file) raises
`OutputError` with one line saying what failed where and that the previous file is intact.
Temporary files left by a killed seglab process (on this machine) are removed the first time a process
writes into their folder.

Text files (configs, list files, class lists) are read as UTF-8 (a byte-order mark is allowed) or as
UTF-16 with a byte-order mark (what Windows editors write as "Unicode"); anything else is one
`DataError` naming the file and the offending byte.
"""
from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import DataError, OutputError

HOST_TAG = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TEMP_TAG = f"seglab-{HOST_TAG}-"
_TEMP_NAME = re.compile(r"^\..+\.seglab-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)\.[^.]*\.tmp$")
_cleaned_folders: set[str] = set()


def describe_os_error(e: OSError, path: Path) -> str:
    """Why writing `path` failed, in words ("no space left on /data/runs", "/x is a file, not a folder")."""
    code = getattr(e, "errno", None)
    folder = path.parent
    if code == errno.ENOSPC:
        return f"no space left on {folder}"
    if code == errno.EDQUOT:
        return f"disk quota exceeded on {folder}"
    if code == errno.EFBIG:
        return "the file size limit was exceeded"
    if code == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {folder}"
    if code == errno.EISDIR or path.is_dir():
        return f"{path} is a folder"
    if code in (errno.ENOTDIR, errno.EEXIST):
        for parent in [path, folder, *folder.parents]:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
    return e.strerror or str(e) or type(e).__name__


def os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind `e` (itself, its cause or context), or one rebuilt from an "os error N" text
    (safetensors' and torch's writers report failed writes that way)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        m = re.search(r"os error (\d+)", str(e))
        if m:
            code = int(m.group(1))
            return OSError(code, os.strerror(code))
        e = e.__cause__ or e.__context__
    return None


def _output_error(path: Path, e: OSError, existed: bool) -> OutputError:
    kept = f"the previous {path.name} is intact" if existed else "nothing was written"
    return OutputError(f"cannot write {path}: {describe_os_error(e, path)}; {kept}")


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _output_error(path, e, False) from None


def make_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `folder` (and its parents), or one OutputError saying why not (a file is in the way, no
    permission, a read-only file system)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {what} {folder}: {describe_os_error(e, folder)}") from None
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_orphan_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of atomic writes (and staged folders) whose seglab process (on this machine) no longer runs;
    returns them. Others' temporary files, and any on another machine, are left alone."""
    if os.name != "posix":  # os.kill(pid, 0) is a liveness test only on POSIX
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or m.group("host") != HOST_TAG or int(m.group("pid")) == os.getpid():
            continue
        if not _pid_alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):  # a killed process's staged folder
                    import shutil

                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to the disk; not possible on every platform."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; once the block has written it, it is flushed to the disk
    (`durable`), renamed onto `path` and the folder flushed. On any error the temporary file is removed
    and `path` is left as it was; a failed write (OSError, or a writer's error caused by one) becomes an
    `OutputError` naming the file and the reason."""
    path = Path(path)
    _make_folder(path)
    folder_key = str(path.parent.resolve())
    if folder_key not in _cleaned_folders:
        _cleaned_folders.add(folder_key)
        remove_orphan_temps(path.parent)
    existed = path.is_file()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_TEMP_TAG}{os.getpid()}.",
                                        suffix=".tmp")
    except OSError as e:
        raise _output_error(path, e, existed) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the final file the permissions a plain open() would (umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_folder(path.parent)
    except Exception as e:
        cause = os_error_in(e)
        if cause is None:
            raise
        raise _output_error(path, cause, existed) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """A folder written as a whole: yields a hidden sibling (`.<name>.seglab-<host>-<pid>.partial.tmp`) to fill,
    renamed onto `folder` when the block ends without error, removed when it fails. `folder` must not
    exist or be empty (a non-empty folder is refused before anything is written: its files would mix with
    the new ones)."""
    import shutil

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        kind = "is a file" if not folder.is_dir() else "is not empty"
        raise OutputError(f"{what} {folder} {kind}; choose a new or empty folder")
    make_folder(folder.parent, what)
    stage = folder.parent / f".{folder.name}.{_TEMP_TAG}{os.getpid()}.partial.tmp"  # an orphan is removed as a temp file
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir()
    except OSError as e:
        raise OutputError(f"cannot create {what} {folder}: {describe_os_error(e, folder.parent)}") from None
    try:
        yield stage
        if folder.is_dir():
            folder.rmdir()  # empty (checked above)
        os.replace(stage, folder)
        fsync_folder(folder.parent)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        cause = os_error_in(e) if isinstance(e, Exception) else None
        if cause is not None and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {what} {folder}: {describe_os_error(cause, folder)}; nothing was "
                              f"written") from e
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_text_file(path: str | os.PathLike, what: str = "text file") -> str:
    """The text of a UTF-8 file (byte-order mark allowed) or a UTF-16 file with a byte-order mark;
    otherwise a one-line DataError naming the file and the first byte that is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found" if not path.exists() else f"{path}: {what} is not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: {what} starts with a UTF-16 byte-order mark but is not valid UTF-16 "
                            f"(at byte {e.start}); save it as UTF-8") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        f"save it as UTF-8") from None
    if "\x00" in text:
        raise DataError(f"{path}: {what} contains NUL bytes (UTF-16 without a byte-order mark, or not a text "
                        f"file?); save it as UTF-8")
    return text


def read_json(path: str | os.PathLike, what: str):
    """The parsed JSON file, or a one-line DataError: "<path>: <what> not found" / "not valid JSON"."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise DataError(f"{path}: not valid JSON ({str(e)[:120]})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON (nested too deeply)") from None


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_image_atomic(path: str | os.PathLike, image, *, durable: bool = True, **options) -> None:
    """Save a PIL image; the format comes from the final name's suffix, not the temp name's. `options` go
    to Pillow's `save` (e.g. `compress_level=1` for a faster PNG)."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path, durable=durable) as tmp:
        image.save(tmp, format=fmt, **options)
