"""Uploads written to disk once: multipart files spool to a *named* file in ``<data_dir>/tmp``, which the route
then links into place instead of copying (issue #22: a 1 GiB upload used 2 GiB of disk in flight).

Starlette's multipart parser keeps each uploaded file in a ``SpooledTemporaryFile``: in memory up to 1 MiB,
then in an anonymous temporary file (in ``/tmp``, possibly another disk). :func:`spool_uploads_in` makes the
parser use :class:`NamedSpool` instead, whose rolled-over file has a name inside the data directory;
:func:`link_spooled` hard-links that file under its final name (same inode: no second copy), and the spool's
name goes away when the request closes the upload. A spool left by a crash is removed on the next start
(:func:`cspon_rs.api.orphans.sweep_orphan_photos`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any

__all__ = ["SPOOL_PREFIX", "NamedSpool", "link_spooled", "spool_uploads_in"]

#: File names of spools in ``<data_dir>/tmp``.
SPOOL_PREFIX = ".upload-"


class NamedSpool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """A ``SpooledTemporaryFile`` that rolls over into a named file in :attr:`directory` (deleted on close)."""

    directory: str | None = None

    def rollover(self) -> None:
        if self._rolled:  # type: ignore[has-type]
            return
        old: Any = self._file  # type: ignore[has-type]  # the in-memory BytesIO
        new = tempfile.NamedTemporaryFile(mode="w+b", dir=self.directory, prefix=SPOOL_PREFIX,  # noqa: SIM115
                                          suffix=".part", delete=True)
        pos = old.tell()
        new.write(old.getvalue())
        new.seek(pos, 0)
        self._file = new
        self._rolled = True


def spool_uploads_in(folder: Path) -> None:
    """Make Starlette's multipart parser spool uploaded files to named files in ``folder`` (created)."""
    import starlette.formparsers

    folder.mkdir(parents=True, exist_ok=True)
    NamedSpool.directory = str(folder)
    setattr(starlette.formparsers, "SpooledTemporaryFile", NamedSpool)  # noqa: B010 - the parser's module global


def spooled_path(file: IO[bytes] | Any) -> Path | None:
    """The on-disk name of an upload's spool, or ``None`` (still in memory, or not a :class:`NamedSpool`)."""
    if not isinstance(file, NamedSpool) or not file._rolled:
        return None
    name = getattr(file._file, "name", None)
    return Path(name) if isinstance(name, str) and os.path.isfile(name) else None


def link_spooled(file: IO[bytes] | Any, dest: Path) -> bool:
    """Hard-link the upload's spool to ``dest`` (no copy); ``False`` when it cannot (in memory, other disk)."""
    source = spooled_path(file)
    if source is None:
        return False
    file.flush()
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not supported: the caller copies
        return False
    return True
