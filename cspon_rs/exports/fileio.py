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

__all__ = ["atomic_path", "atomic_write_text", "default_file_mode", "publish", "write_json"]


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


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically with the default file mode (folder created)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def _json_ready(value: object) -> object:
    """Replace non-finite floats by None (strict JSON) and numpy scalars by Python numbers."""
    import math

    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: dict[str, object]) -> Path:
    """Write a report as strict JSON (NaN/inf become null), atomically, indent 2."""
    import json

    return atomic_write_text(path, json.dumps(_json_ready(data), indent=2, allow_nan=False) + "\n")
