"""Small real file systems for the fault tests: a tmpfs of a given size, which a test can fill
up (a full disk) or remount read-only (a failing disk, a volume mounted read-only).

Mounting needs root; without it the test skips locally and fails in CI (`CI` set), as the
other infrastructure does (tests/pgcluster.py)."""

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.pgcluster import unavailable


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"mount {' '.join(args)} failed: {done.stderr.strip()}")


@contextmanager
def tmpfs(size_kib: int, owner: dict | None = None) -> Iterator[Path]:
    """A fresh tmpfs of `size_kib` KiB mounted on a temporary directory, its root owned by
    `owner` (tests.pgcluster.unprivileged's user and group) if given; unmounted and removed
    afterwards, whatever the test left in it."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        unavailable("mounting a tmpfs needs root and mount(8)")
    directory = Path(tempfile.mkdtemp(prefix="todo-tmpfs-"))
    try:
        _mount("-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(directory))
    except RuntimeError as error:
        directory.rmdir()
        unavailable(str(error))
    try:
        if owner:
            os.chown(directory, owner["user"], owner["group"])
        yield directory
    finally:
        # Lazily: a file still open (a connection a logged error's traceback keeps until the
        # test ends) must not keep the tmpfs mounted; it goes when the last file closes.
        subprocess.run(["umount", "--lazy", str(directory)], check=True)
        directory.rmdir()


def remount(directory: Path, read_only: bool) -> None:
    """Remount the tmpfs at `directory` read-only or read-write. Linux refuses (busy) to make
    a file system read-only while a file on it is open for writing."""
    _mount("-o", f"remount,{'ro' if read_only else 'rw'}", str(directory))


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte with one file; returns its path."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = bytes(1 << 16)
        while True:
            try:
                os.write(descriptor, chunk)  # the last one writes what fits
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return filler
    finally:
        os.close(descriptor)


def set_immutable(path: Path, immutable: bool) -> None:
    """Set or clear the immutable attribute of `path` (chattr(1)): nobody, not even root, may
    then write the file, or create or remove files in the directory."""
    subprocess.run(["chattr", "+i" if immutable else "-i", str(path)], check=True)
