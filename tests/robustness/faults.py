"""Fault injection for the robustness suite: run a command in a subprocess whose output folder is full,
read-only, or capped by a file-size limit.

A full disk is a small tmpfs mounted in a private mount namespace (`unshare --user --map-root-user --mount`,
no root needed where unprivileged user namespaces are allowed); where that is not possible, RLIMIT_FSIZE
gives the same failure path (the write fails with EFBIG instead of ENOSPC). A read-only folder is a
read-only bind mount in such a namespace, or `chmod a-w` for a user who is not root (root ignores modes).
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = sys.executable
TIMEOUT = 300


@functools.cache
def namespaces_work() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in its own mount namespace."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def seglab_command(*argv) -> list[str]:
    return [PYTHON, "-m", "seglab", *map(str, argv)]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def run_with_full_disk(folder: Path, free_bytes: int, command: list[str]) -> subprocess.CompletedProcess:
    """Run `command` with `folder` on a tmpfs that holds its current files and only `free_bytes` more
    (the folder's files are copied in first and copied back out afterwards: the test sees the result)."""
    if not namespaces_work():
        pytest.skip("mount namespaces are not available here (see run_with_file_size_limit)")
    used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    size = used + free_bytes + 64 * 1024  # tmpfs rounds to pages and counts metadata
    stash, f = q(folder.with_name(folder.name + ".stash")), q(folder)
    script = "\n".join([
        "set -e",
        f"rm -rf {stash}; cp -a {f} {stash}",                      # the folder's files, kept aside
        f"mount -t tmpfs -o size={size} tmpfs {f}",
        f"cp -a {stash}/. {f}/",
        f"fill=$(( $(stat -f -c '%a*%S' {f}) - {free_bytes} ))",   # leave free_bytes free
        f"if [ $fill -gt 0 ]; then head -c $fill /dev/zero > {f}/.filler || true; fi",
        "set +e",
        " ".join(map(q, command)) + "; rc=$?",
        f"rm -f {f}/.filler; rm -rf {stash}; mkdir {stash}; cp -a {f}/. {stash}/",  # the result
        f"umount {f}; find {f} -mindepth 1 -delete; cp -a {stash}/. {f}/; rm -rf {stash}",
        "exit $rc"])
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env())


def run_with_file_size_limit(limit: int, command: list[str]) -> subprocess.CompletedProcess:
    """Run `command` with RLIMIT_FSIZE = `limit` bytes: a write past it fails with EFBIG (Python ignores
    SIGXFSZ), as a full disk fails a write with ENOSPC."""
    code = ("import resource, subprocess, sys; "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "import os, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    return subprocess.run([PYTHON, "-c", code, *command], capture_output=True, text=True, timeout=TIMEOUT,
                          env=_env())


def run_read_only(folder: Path, command: list[str]) -> subprocess.CompletedProcess:
    """Run `command` with `folder` read-only (a read-only bind mount, or chmod for a non-root user)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    if not namespaces_work():
        pytest.skip("root ignores file modes and mount namespaces are not available here")
    script = (f"mount --bind {q(folder)} {q(folder)} && mount -o remount,ro,bind {q(folder)} && "
              f"{' '.join(map(q, command))}")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env())


def q(x) -> str:
    return shlex.quote(str(x))


def one_error_line(proc: subprocess.CompletedProcess, *fragments) -> str:
    """Exit 2 and exactly one `seglab: error:` line on stderr holding every fragment, no traceback."""
    err = proc.stderr.strip()
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 2, f"exit {proc.returncode}: {err[-2000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seglab: error: "), err[-2000:]
    for f in fragments:
        assert str(f) in lines[0], f"{f!r} not in {lines[0]}"
    return lines[0]
