"""Safe handling of uploaded files and server-side paths.

Uploaded files are stored under a server-generated name inside the data directory (the client's filename
is only recorded, never used as a path), size- and quota-limited and type-checked by magic bytes. A file that
the multipart parser spooled to ``<data_dir>/tmp`` (:mod:`cspon_rs.api.spool`) is hard-linked into place, so
it is on disk once, not twice.
Server-side paths given by clients must resolve inside an allowed root (no ``..`` escape, no symlink out).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from cspon_rs.api.deps import error_detail
from cspon_rs.api.settings import ServeSettings
from cspon_rs.api.spool import link_spooled, spooled_path

__all__ = ["SavedFile", "folder_bytes", "image_pixels", "resolve_input", "resolve_inside", "save_upload",
           "sniff_type"]

FileKind = Literal["jpeg", "png", "tiff", "gpkg", "pdf"]

_MAGIC: dict[str, tuple[bytes, ...]] = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    # classic TIFF little/big endian, BigTIFF little/big endian
    "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "gpkg": (b"SQLite format 3\x00",),
    "pdf": (b"%PDF-",),  # case documents (处罚决定书, 整改材料)
}
_CONTENT_TYPE = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tiff": "image/tiff",
    "gpkg": "application/geopackage+sqlite3",
    "pdf": "application/pdf",
}
_SUFFIX = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "gpkg": ".gpkg", "pdf": ".pdf"}
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SavedFile:
    """A file written from an upload."""

    path: Path
    kind: str
    content_type: str
    size: int
    sha256: str
    original_name: str | None


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder`` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def sniff_type(head: bytes, allowed: tuple[FileKind, ...]) -> str | None:
    """The kind among ``allowed`` whose magic bytes start ``head``, else ``None``."""
    for kind in allowed:
        if any(head.startswith(m) for m in _MAGIC[kind]):
            return kind
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def resolve_inside(
    raw: str, roots: list[Path], field: str, *, only_within: tuple[Path, list[Path]] | None = None
) -> Path:
    """Resolve a client-given server path; 422 unless it lies inside one of ``roots`` and exists.

    Relative paths are taken relative to the first root in which they name an allowed file.
    ``only_within=(folder, allowed)``: inside ``folder`` only paths under one of ``allowed`` pass (checked
    before existence, so nothing tells whether a refused file exists).
    """
    if not raw or "\x00" in raw:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(field, "empty or invalid path")
        )

    def refused(path: Path) -> bool:
        return only_within is not None and _inside(path, only_within[0]) and not any(
            _inside(path, a) for a in only_within[1]
        )

    candidate = Path(raw)
    if not candidate.is_absolute():
        # relative: to the first root where it names an allowed file, else to the first root
        found = [r / candidate for r in roots if _inside((r / candidate).resolve(), r)]
        found = [f for f in found if not refused(f.resolve()) and f.resolve().is_file()]
        candidate = found[0] if found else roots[0] / candidate
    resolved = candidate.resolve()
    if refused(resolved) or not any(_inside(resolved, root) for root in roots):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(
                field,
                f"path {raw!r} is not inside your uploads or a configured scene root; "
                "upload it first (POST /scenes/upload, /layers)",
            ),
        )
    if not resolved.is_file():
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(field, f"file {raw!r} does not exist")
        )
    return resolved


def resolve_input(raw: str, settings: ServeSettings, user_id: int, field: str) -> Path:
    """Resolve a client-given input path (scene image, layer, checkpoint) for user ``user_id``.

    Allowed: the user's own uploads (``<data_dir>/uploads/u<id>``) and the admin-configured
    ``scene_roots``. Refused (422, same message as a path outside): another user's uploads, job outputs and
    anything else inside the data directory -- so one county's files never become another county's inputs.
    """
    return resolve_inside(raw, settings.input_roots(user_id), field, only_within=settings.refused_inside(user_id))


#: Most pixels a photo may decode to (Pillow's own default limit, ≈ 89 Mpx: a 12000 × 7500 camera frame).
MAX_IMAGE_PIXELS = 89_478_485


def image_pixels(path: Path) -> int | None:
    """Width × height that a JPEG/PNG decodes to, read from its header only (nothing is decoded); ``None`` when
    Pillow cannot tell, ``MAX_IMAGE_PIXELS * 2 + 1`` when Pillow itself calls it a decompression bomb."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return int(image.size[0]) * int(image.size[1])
    except Image.DecompressionBombError:
        return MAX_IMAGE_PIXELS * 2 + 1
    except (OSError, ValueError, SyntaxError):
        return None


def _refuse_image_bomb(path: Path, field: str, name: str | None) -> None:
    """413 when an image decodes to more than :data:`MAX_IMAGE_PIXELS` (a 48 KB PNG can claim 400 Mpx)."""
    pixels = image_pixels(path)
    if pixels is not None and pixels > MAX_IMAGE_PIXELS:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=error_detail(
                field, f"image {name!r} decodes to over {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx, the limit; send a "
                "smaller photo (e.g. the phone's 12 Mpx original)"
            ),
        )


def _too_large(field: str, name: str | None, size: int, max_bytes: int, room: int | None,
               quota: tuple[Path, int] | None) -> HTTPException | None:
    if size > max_bytes:
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=error_detail(
            field, f"file {name!r} is larger than the limit of {max_bytes} bytes"))
    if room is not None and quota is not None and size > room:
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=error_detail(
            field, f"your uploads would exceed your quota of {quota[1]} bytes ({quota[1] - room} bytes used); "
            "delete old uploads or ask an admin for more"))
    return None


def _link_checked(upload: UploadFile, spooled: Path, tmp: Path, final: Path, field: str, max_bytes: int,
                  room: int | None, quota: tuple[Path, int] | None, kind: str) -> SavedFile | None:
    """The spooled upload linked to ``final`` after the size, quota and image checks; ``None`` when it cannot
    be linked (the caller copies instead)."""
    upload.file.flush()
    size = spooled.stat().st_size
    refused = _too_large(field, upload.filename, size, max_bytes, room, quota)
    if refused is not None:
        raise refused
    if not link_spooled(upload.file, tmp):
        return None
    try:
        if kind in ("jpeg", "png"):
            _refuse_image_bomb(tmp, field, upload.filename)
        digest = hashlib.sha256()
        with open(tmp, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return SavedFile(final, kind, _CONTENT_TYPE[kind], size, digest.hexdigest(), upload.filename)


async def save_upload(
    upload: UploadFile,
    dest_dir: Path,
    data_dir: Path,
    *,
    allowed: tuple[FileKind, ...],
    max_bytes: int,
    field: str,
    stem: str | None = None,
    quota: tuple[Path, int] | None = None,
) -> SavedFile:
    """Stream ``upload`` into ``dest_dir`` under a generated name, checking type and size.

    Args:
        upload: The multipart file.
        dest_dir: Target folder; must lie inside ``data_dir``.
        data_dir: The service data directory.
        allowed: Accepted kinds (checked by magic bytes, not by filename or declared content type).
        max_bytes: Size limit; the partial file is deleted when exceeded (413).
        field: Form field name, for error messages.
        stem: File name without suffix (default: a random UUID).
        quota: ``(folder, bytes)``: everything under ``folder`` (the user's uploads) plus this file must stay
            within ``bytes`` (413 naming both figures otherwise).

    Returns:
        What was written.
    """
    root = data_dir.resolve()
    dest_dir = dest_dir.resolve()
    if not _inside(dest_dir, root):  # defensive: dest_dir is always built by the server
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(field, "bad destination")
        )
    head = await upload.read(16)
    kind = sniff_type(head, allowed)
    if kind is None:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=error_detail(
                field,
                f"file {upload.filename!r} is not one of {', '.join(allowed)} (checked by its first bytes)",
            ),
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"{stem or uuid.uuid4().hex}{_SUFFIX[kind]}"
    tmp = dest_dir / f".{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    room = None if quota is None else quota[1] - folder_bytes(quota[0])
    spooled = spooled_path(upload.file)
    if spooled is not None:  # already on disk in <data_dir>/tmp: check it, hash it, link it (no second copy)
        linked = await run_in_threadpool(_link_checked, upload, spooled, tmp, final, field, max_bytes, room, quota,
                                         kind)
        if linked is not None:
            await upload.close()  # the spool's temporary name goes now; the data stays under its final name
            return linked
    try:
        with open(tmp, "wb") as out:
            chunk = head
            while chunk:
                size += len(chunk)
                if size > max_bytes:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        detail=error_detail(
                            field, f"file {upload.filename!r} is larger than the limit of {max_bytes} bytes"
                        ),
                    )
                if room is not None and size > room:
                    assert quota is not None
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        detail=error_detail(
                            field, f"your uploads would exceed your quota of {quota[1]} bytes "
                            f"({quota[1] - room} bytes used); delete old uploads or ask an admin for more"
                        ),
                    )
                digest.update(chunk)
                out.write(chunk)
                chunk = await upload.read(_CHUNK)
        if kind in ("jpeg", "png"):
            _refuse_image_bomb(tmp, field, upload.filename)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return SavedFile(final, kind, _CONTENT_TYPE[kind], size, digest.hexdigest(), upload.filename)
