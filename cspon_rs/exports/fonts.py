"""A CJK font for pictures and PDF reports, or a clear one-line warning.

Searched, in order: ``CSPON_CJK_FONT`` (a .ttf/.otf/.ttc path); Noto Sans CJK from the ``noto-cjk-sans-otc``
wheel (a cspon-rs dependency, SIL Open Font License 1.1, the same file Debian ships); then the Noto Sans CJK /
Source Han Sans / WenQuanYi / Droid Sans Fallback files Debian, Ubuntu, Fedora, macOS and Windows install
(``apt-get install fonts-noto-cjk``). Without any, pictures fall back to a Latin font (Chinese text shows
as boxes) and the report refuses to embed a font it cannot find.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CjkFont", "find_cjk_font", "pil_font"]

_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/adobe-source-han-sans/SourceHanSansSC-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Light.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)


@dataclass(frozen=True)
class CjkFont:
    """A font file and the face index of its Simplified Chinese face (0 for single-face files)."""

    path: Path
    index: int
    family: str


def _sc_face(path: Path) -> tuple[int, str]:
    """Index and family of the Simplified Chinese face of a collection (first face otherwise)."""
    if path.suffix.lower() != ".ttc":
        from fontTools.ttLib import TTFont

        with TTFont(str(path), lazy=True) as font:
            return 0, str(font["name"].getBestFamilyName())
    from fontTools.ttLib import TTCollection

    collection = TTCollection(str(path), lazy=True)
    try:
        names = [str(f["name"].getBestFamilyName()) for f in collection.fonts]
    finally:
        collection.close()
    for i, name in enumerate(names):
        if name.endswith(" SC") or "SC " in name or "Hei" in name:
            return i, name
    return 0, names[0] if names else path.stem


def _wheel_font() -> tuple[str, ...]:
    """The Noto Sans CJK collection of the ``noto-cjk-sans-otc`` wheel, when installed."""
    try:
        from importlib.resources import files

        return (str(files("noto_cjk_sans_otc") / "NotoSansCJK-Regular.ttc"),)
    except ModuleNotFoundError:
        return ()


@functools.cache
def find_cjk_font(*, warn: bool = True) -> CjkFont | None:
    """The first CJK font found (cached); ``None`` after one warning line on stderr when there is none."""
    override = os.environ.get("CSPON_CJK_FONT")
    for candidate in ((override,) if override else ()) + _wheel_font() + _CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            try:
                index, family = _sc_face(path)
            except Exception:  # an unreadable font file is skipped, the next one tried
                continue
            return CjkFont(path, index, family)
    if warn:
        print("warning: no CJK font found (Chinese text in pictures will show as boxes, PDF reports are "
              "unavailable); install one, e.g. `apt-get install fonts-noto-cjk`, or set CSPON_CJK_FONT=/path/font.ttc",
              file=sys.stderr)
    return None


@functools.cache
def pil_font(size: int) -> object:
    """A Pillow font of ``size`` px that draws Chinese when a CJK font exists (else Pillow's default)."""
    from PIL import ImageFont

    found = find_cjk_font()
    if found is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(str(found.path), size, index=found.index)
