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


class SceneCheck:
    """Is a scene file still the one a stored result came from? Each file is hashed at most once."""

    def __init__(self) -> None:
        self._now: dict[str, str | None] = {}

    def problem(self, which: str, path: str, stored_sha: str | None, *, since: str = "detection") -> str | None:
        """Why ``path`` cannot be used (gone, or its sha256 differs from ``stored_sha``), or ``None``.

        Args:
            which: Name of the scene in the message (``scene_before``...).
            stored_sha: The recorded sha256; ``None`` only checks that the file exists.
            since: When the checksum was recorded (for the message).
        """
        if path not in self._now:
            self._now[path] = file_sha256(path) if Path(path).is_file() else None
        now = self._now[path]
        if now is None:
            return f"{which} scene {path} is gone"
        if stored_sha and now != stored_sha:
            return f"{which} scene {path} changed since {since} (sha256 {stored_sha[:12]}… stored, {now[:12]}… now)"
        return None
