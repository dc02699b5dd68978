"""Where, when and in which direction a photo was taken, from its EXIF tags (Pillow).

Field photos (举证) carry their evidence in EXIF: ``GPSLatitude``/``GPSLongitude`` (WGS84 degrees, which
this project treats as CGCS2000 EPSG:4490 -- the two differ by centimetres), ``GPSImgDirection`` (degrees
clockwise from true or magnetic north, ``GPSImgDirectionRef`` T/M) and ``DateTimeOriginal`` (camera local
time; ``OffsetTimeOriginal`` gives its UTC offset when the camera wrote it).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

__all__ = ["PhotoExif", "read_exif"]


@dataclass(frozen=True)
class PhotoExif:
    """The evidence tags of one photo (``None`` where the file has no usable value).

    Attributes:
        lon, lat: Position in degrees (EPSG:4326 / CGCS2000), from the GPS IFD.
        bearing_deg: Direction the camera faced, degrees clockwise from north (0 <= x < 360).
        bearing_ref: ``"T"`` (true north) or ``"M"`` (magnetic north) as written by the camera.
        taken_local: ``DateTimeOriginal`` as written (camera local time, naive).
        offset: ``OffsetTimeOriginal`` as a time zone, when present.
    """

    lon: float | None = None
    lat: float | None = None
    bearing_deg: float | None = None
    bearing_ref: str | None = None
    taken_local: dt.datetime | None = None
    offset: dt.tzinfo | None = None

    def taken_at(self, zone: dt.tzinfo | None) -> dt.datetime | None:
        """``DateTimeOriginal`` as an aware time: in ``OffsetTimeOriginal`` when present, else ``zone``."""
        if self.taken_local is None:
            return None
        tz = self.offset or zone
        return self.taken_local.replace(tzinfo=tz) if tz is not None else None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) else None


def _degrees(dms: Any, ref: Any) -> float | None:
    """Degrees from an EXIF (deg, min, sec) triple of rationals and its N/S/E/W reference."""
    if not isinstance(dms, tuple | list) or len(dms) != 3:
        return None
    parts = [_float(v) for v in dms]
    if any(p is None for p in parts):
        return None
    d, m, s = (float(p) for p in parts if p is not None)
    value = d + m / 60.0 + s / 3600.0
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    if isinstance(ref, str) and ref.strip("\x00 ").upper() in ("S", "W"):
        value = -value
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    return value.strip("\x00 ") or None if isinstance(value, str) else None


def read_exif(path: str | Path) -> PhotoExif:
    """Read the position, bearing and capture time of a JPEG/PNG photo.

    Args:
        path: The image file.

    Returns:
        The tags found; an empty :class:`PhotoExif` for a file without EXIF or one Pillow cannot read.
        Positions outside -180..180 / -90..90 or exactly (0, 0) (an unset GPS) are dropped.
    """
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            gps = dict(exif.get_ifd(ExifTags.IFD.GPSInfo))
            sub = dict(exif.get_ifd(ExifTags.IFD.Exif))
    except (OSError, ValueError, SyntaxError):
        return PhotoExif()
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef))
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        lat = lon = None
    bearing = _float(gps.get(ExifTags.GPS.GPSImgDirection))
    if bearing is not None and not 0 <= bearing <= 360:
        bearing = None
    taken: dt.datetime | None = None
    raw = _text(sub.get(ExifTags.Base.DateTimeOriginal))
    if raw:
        try:
            taken = dt.datetime.strptime(raw, "%Y:%m:%d %H:%M:%S")
        except ValueError:
            taken = None
    offset: dt.tzinfo | None = None
    raw_offset = _text(sub.get(ExifTags.Base.OffsetTimeOriginal))
    if raw_offset:
        try:
            offset = dt.datetime.strptime(raw_offset, "%z").tzinfo
        except ValueError:
            offset = None
    return PhotoExif(
        lon=lon,
        lat=lat,
        bearing_deg=None if bearing is None else bearing % 360.0,
        bearing_ref=_text(gps.get(ExifTags.GPS.GPSImgDirectionRef)),
        taken_local=taken,
        offset=offset,
    )
