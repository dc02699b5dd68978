"""Field photos made fit for a printed report: downscaled JPEGs, one photo in memory at a time.

A phone photo is 4000 x 3000 px (12 Mpx, several MB); printed 88 mm wide on an A4 sheet it needs about
1000 px. :func:`print_photo` writes a copy whose long edge is at most :data:`MAX_EDGE_PX` (1600 px) as a
JPEG (quality 85), so a report embeds ~200-400 KB per photo instead of the original. JPEGs are decoded at
a reduced scale straight away (``Image.draft``: libjpeg's DCT scaling), so even the transient decode stays
small; other formats are decoded once and reduced with ``Image.thumbnail``.

Decompression bombs: a file whose header announces more than :data:`MAX_PIXELS` pixels (e.g. a 48 KB PNG
that decodes to 400 Mpx) is never decoded; the report shows a placeholder that names the photo, its pixel
size and where to download it, so that every photo is still accounted for on the sheet.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

__all__ = ["MAX_EDGE_PX", "MAX_PIXELS", "PrintedPhoto", "print_photo"]

#: Longest side of a printed photo, pixels (88 mm at ~460 dpi; A4 full width at ~200 dpi).
MAX_EDGE_PX = 1600
#: Largest photo decoded for print (50 Mpx: a 50 Mpx RGB decode is 150 MB, once, transiently).
MAX_PIXELS = 50_000_000
JPEG_QUALITY = 85


class PrintedPhoto(str):
    """Path of the printable JPEG (a ``str``), with ``placeholder`` = True when the original was not shown."""

    placeholder: bool = False


def _placeholder(out: Path, text: str) -> PrintedPhoto:
    image = Image.new("RGB", (800, 450), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    font = None
    try:
        from PIL import ImageFont

        from cspon_rs.exports.fonts import find_cjk_font

        found = find_cjk_font()
        if found is not None:
            font = ImageFont.truetype(str(found.path), 26, index=found.index)
    except OSError:
        font = None
    draw.rectangle((4, 4, 795, 445), outline=(150, 150, 150), width=3)
    draw.multiline_text((30, 150), text, fill=(60, 60, 60), font=font, spacing=10)
    image.save(out, format="JPEG", quality=80)
    printed = PrintedPhoto(str(out))
    printed.placeholder = True
    return printed


def print_photo(source: str | Path, out_dir: str | Path, *, max_edge: int = MAX_EDGE_PX,
                max_pixels: int = MAX_PIXELS, label: str = "") -> PrintedPhoto:
    """Write a print copy of ``source``: JPEG, long edge ≤ ``max_edge`` px, EXIF orientation applied.

    Args:
        source: Photo file (JPEG or PNG; anything Pillow reads).
        out_dir: Folder for the copy (a new file per call).
        max_edge: Longest side of the copy in pixels.
        max_pixels: Larger images are not decoded (decompression-bomb guard); a placeholder is written.
        label: Shown on a placeholder (e.g. the photo's id or API path).

    Returns:
        Path of the JPEG; ``.placeholder`` is True when the photo could not be shown (too large,
        unreadable) and the copy is a grey card saying why.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="photo_", suffix=".jpg", dir=out_dir)
    os.close(fd)
    out = Path(name)
    shown = label or Path(source).name
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                return _placeholder(out, f"照片过大, 未打印 photo not printed\n{shown}\n"
                                         f"{width} x {height} px ({width * height / 1e6:.0f} Mpx)")
            if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still covers the print size
                scale = max_edge / max(width, height)
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.load()
            oriented = ImageOps.exif_transpose(image)
            rgb = oriented.convert("RGB")
            rgb.thumbnail((max_edge, max_edge), Image.Resampling.BICUBIC, reducing_gap=2.0)
            rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return _placeholder(out, f"照片无法读取 photo unreadable\n{shown}\n{type(exc).__name__}")
    return PrintedPhoto(str(out))
