"""File identity: the SHA-256 of a scene or checkpoint file.

Stored warnings tie back to pixels through the absolute path of each scene *and* its checksum, so a
scene that was replaced or edited after detection is noticed before its pixels are used as training
labels (``cspon-rs labels export``) and a model version is named by the checksum of its weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cspon_rs.errors import MissingFileError

__all__ = ["CHUNK_BYTES", "file_sha256"]

#: Bytes read at a time: memory stays flat for multi-gigabyte scenes.
CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        MissingFileError: ``path`` is not a file.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{p}: file not found, so its sha256 cannot be computed")
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
