"""Atomic writes of deliverables with ordinary file modes.

Every export is written to a temporary file beside its target and renamed into place, so a reader never
sees a half-written list. :func:`tempfile.mkstemp` creates files with mode 0600; the finished file gets
the mode a plain ``open(path, "w")`` would give it (0666 less the process umask, 0644 with the usual 022),
so colleagues and web servers can read what a bureau files upward.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "default_file_mode", "publish"]


def default_file_mode() -> int:
    """Mode of a newly created regular file under the current umask (e.g. 0o644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the default file mode and rename it onto ``target`` (atomic on one filesystem)."""
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, target)


@contextmanager
def atomic_path(path: Path, *, keep_tmp: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` with the default file mode.

    Args:
        path: Final file; its folder is created.
        keep_tmp: Leave the empty temporary file in place (``False`` deletes it first, for writers that
            refuse to open an existing file, e.g. GDAL drivers).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    if not keep_tmp:
        tmp.unlink()
    try:
        yield tmp
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
