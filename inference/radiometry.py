"""Per-scene radiometry: measure each date, refuse what cannot fit the model, bring it to the card's range.

A checkpoint learned one value distribution (its card's :class:`~cspon_rs.models.card.InputContract`:
dtype, range and per-band percentiles of the training pixels, both dates pooled). Imagery arrives as 8-bit
mosaics, 16-bit DN (GF-1/2/6, BJ-2), Sentinel-2 L1C/L2A 0-10000 or 0-1 floats, and one city's red median can
drop by a third between two dates. Before any pixel is predicted each date is

1. **measured** (:func:`measure_date`): dtype, per-band percentiles on a decimated read (at most
   :data:`SAMPLE_PX` pixels), nodata share;
2. **checked** (:func:`check_date`): a date that is (almost) all nodata or has a constant band stops the run
   with one line naming the file, band and value (:class:`~cspon_rs.errors.InputRangeError`);
3. **mapped** to the card's distribution by a monotone per-band piecewise-linear function
   (:class:`BandMap`), computed once per scene and applied to every window before the card's
   ``normalization`` (:func:`plan_radiometry`). Methods (:data:`METHODS`):

   * ``none`` -- raw values as they are (the behaviour before this module);
   * ``gain`` -- one gain for the whole scene (both dates, all bands): the median over bands of the card's
     98th percentile over the scene's (both dates averaged); keeps colour and the dates' differences;
   * ``standardize`` -- robust per-band standardisation: the scene's median and 2-98 % range onto the card's;
   * ``percentile`` -- percentile (histogram) matching: each of the card's percentile levels of the scene is
     mapped onto the card's value at that level, linear in between and beyond (slope of the 2-98 % range);
   * ``relative`` -- relative normalisation: date 2 percentile-matched to date 1, then both standardised to
     the card with date 1's statistics (keeps the two dates' real differences in scale).

   Every method but ``none`` is invariant to a per-band gain (8-bit, 16-bit DN x 10, or 0-1 floats give the
   same model input). The default is the card's ``input.radiometry``, chosen on validation pairs by
   ``models/card_stats.py select`` (figures in the card and docs/models.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cspon_rs.errors import CorruptFileError, InputRangeError
from cspon_rs.models.card import QUANTILE_LEVELS, ModelCard

__all__ = [
    "METHODS",
    "MIN_VALID_SHARE",
    "SAMPLE_PX",
    "BandMap",
    "DateStats",
    "Method",
    "Radiometry",
    "array_stats",
    "band_map",
    "check_date",
    "describe_dtype",
    "measure_date",
    "plan_radiometry",
]

Method = Literal["none", "gain", "standardize", "percentile", "relative"]
#: The radiometric normalisations, in the order they are compared on validation.
METHODS: tuple[str, ...] = ("none", "gain", "standardize", "percentile", "relative")
_METHOD_WORDS = {
    "none": "not rescaled (raw values)",
    "gain": "scaled by one gain for both dates and all bands to the card's 98th percentile",
    "standardize": "scaled by robust per-band standardisation to the card",
    "percentile": "scaled by percentile matching to the card",
    "relative": "scaled by relative normalisation (date 2 matched to date 1, then standardised to the card)",
}
#: Most pixels read per date to measure it (a decimated read of the whole scene).
SAMPLE_PX = 1_000_000
#: A date with less than this share of valid pixels is refused.
MIN_VALID_SHARE = 0.01


def describe_dtype(dtype: str) -> str:
    """``uint8`` -> ``8-bit``, ``uint16``/``int16`` -> ``16-bit``, ``float32`` -> ``float``."""
    d = np.dtype(dtype)
    if d.kind == "f":
        return "float"
    return f"{d.itemsize * 8}-bit"


@dataclass(frozen=True)
class DateStats:
    """What :func:`measure_date` learned about one date.

    Attributes:
        source: File (or pair id) measured.
        dtype: Its data type (``uint8``, ``uint16``, ``float32``...).
        bands: Band names (the card's) or ``band1``...
        levels: Percentile levels (%), :data:`~cspon_rs.models.card.QUANTILE_LEVELS`.
        quantiles: Per band, the values at ``levels`` over the valid sampled pixels (raw units).
        minimum, maximum: Per band, over the valid sampled pixels.
        nodata_share: Share of the sampled pixels that are nodata (0-1).
        sampled: Pixels sampled.
    """

    source: str
    dtype: str
    bands: tuple[str, ...]
    levels: tuple[float, ...]
    quantiles: tuple[tuple[float, ...], ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    nodata_share: float
    sampled: int

    def table(self) -> np.ndarray:
        """``(bands, levels)`` float64 quantile table."""
        return np.asarray(self.quantiles, dtype=np.float64)

    def value(self, level: float) -> np.ndarray:
        """Per-band value at percentile ``level``."""
        return self.table()[:, list(self.levels).index(level)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (p2/p50/p98 per band)."""
        return {
            "source": self.source, "dtype": self.dtype, "nodata_share": round(self.nodata_share, 4),
            "p2": [round(float(v), 4) for v in self.value(2.0)],
            "p50": [round(float(v), 4) for v in self.value(50.0)],
            "p98": [round(float(v), 4) for v in self.value(98.0)],
        }


def array_stats(
    array: np.ndarray, valid: np.ndarray | None, *, source: str, dtype: str | None = None,
    bands: list[str] | tuple[str, ...] | None = None, levels: tuple[float, ...] = QUANTILE_LEVELS,
) -> DateStats:
    """Measure a ``(C, H, W)`` array (raw units) on its ``valid`` pixels (all when None)."""
    c = array.shape[0]
    v = np.ones(array.shape[1:], dtype=bool) if valid is None else valid.astype(bool)
    names = tuple(bands) if bands is not None and len(bands) == c else tuple(f"band{i + 1}" for i in range(c))
    n = int(v.size)
    share = 1.0 - float(v.sum()) / n if n else 1.0
    if v.any():
        pix = array[:, v].astype(np.float64)
        q = np.percentile(pix, levels, axis=1).T
        lo, hi = pix.min(axis=1), pix.max(axis=1)
    else:
        q = np.full((c, len(levels)), np.nan)
        lo = hi = np.full(c, np.nan)
    return DateStats(
        source=source, dtype=str(dtype or array.dtype), bands=names, levels=tuple(levels),
        quantiles=tuple(tuple(float(x) for x in row) for row in q), minimum=tuple(float(x) for x in lo),
        maximum=tuple(float(x) for x in hi), nodata_share=share, sampled=n,
    )


def measure_date(
    path: str | Path, *, bands: list[str] | tuple[str, ...] | None = None, sample_px: int = SAMPLE_PX
) -> DateStats:
    """Measure one scene file from a decimated read (nearest neighbour, at most ``sample_px`` pixels).

    Raises:
        CorruptFileError: The pixels cannot be read.
    """
    from rasterio.errors import RasterioIOError

    from cspon_rs.geo.raster import open_raster

    with open_raster(path, require_crs=False) as src:
        factor = max(1, math.ceil(math.sqrt(src.width * src.height / max(sample_px, 1))))
        h, w = max(1, math.ceil(src.height / factor)), max(1, math.ceil(src.width / factor))
        try:
            data = src.read(out_shape=(src.count, h, w))
            valid = src.dataset_mask(out_shape=(h, w)) > 0
        except RasterioIOError as exc:
            raise CorruptFileError(f"{path}: pixels unreadable ({exc})") from exc
        dtype = str(src.dtypes[0])
    if np.dtype(dtype).kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    return array_stats(data, valid, source=str(path), dtype=dtype, bands=bands)


def check_date(stats: DateStats, *, min_valid_share: float = MIN_VALID_SHARE) -> None:
    """Refuse a date the model cannot use: (almost) all nodata, or a constant band.

    Raises:
        InputRangeError: One line naming the file, the band and the value.
    """
    valid_share = 1.0 - stats.nodata_share
    if valid_share < min_valid_share:
        raise InputRangeError(
            f"{stats.source}: {stats.nodata_share:.1%} of the pixels are nodata (all bands, {stats.sampled:,} "
            f"sampled); at least {min_valid_share:.0%} must hold data: check the file's nodata value or "
            "the date's footprint"
        )
    levels = list(stats.levels)
    for k, name in enumerate(stats.bands):
        lo, hi = stats.minimum[k], stats.maximum[k]
        if lo == hi:
            raise InputRangeError(
                f"{stats.source}: band {k + 1} ({name}) is constant (value {lo:g} on every valid pixel); "
                "the model cannot see change in it: check the band order and the file's nodata value"
            )
        q = stats.quantiles[k]
        p1, p99 = q[levels.index(1.0)], q[levels.index(99.0)]
        if p1 == p99:
            raise InputRangeError(
                f"{stats.source}: band {k + 1} ({name}) is almost constant (value {p1:g} on at least 98 % of "
                f"the valid pixels, range {lo:g}-{hi:g}); check the band order and the file's nodata value"
            )


@dataclass(frozen=True)
class BandMap:
    """A monotone piecewise-linear map per band (raw units -> the card's units), linear beyond the ends.

    Attributes:
        xp: Per band, increasing breakpoints in the scene's units.
        fp: Per band, their images in the card's units.
        slope_lo, slope_hi: Per band, slopes used below the first / above the last breakpoint.
    """

    xp: tuple[tuple[float, ...], ...]
    fp: tuple[tuple[float, ...], ...]
    slope_lo: tuple[float, ...]
    slope_hi: tuple[float, ...]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Map a ``(C, H, W)`` or ``(N, C, H, W)`` raw array to float32 in the card's units."""
        out = np.empty(array.shape, dtype=np.float32)
        axis = 0 if array.ndim == 3 else 1
        for k in range(array.shape[axis]):
            x = (array[k] if axis == 0 else array[:, k]).astype(np.float32, copy=False)
            gain, offset = self._linear(k)
            if gain is not None:  # one line (gain, standardize): a multiply-add instead of interp + extrapolation
                y = x * np.float32(gain) + np.float32(offset)
                if axis == 0:
                    out[k] = y
                else:
                    out[:, k] = y
                continue
            xp = np.asarray(self.xp[k], dtype=np.float32)
            fp = np.asarray(self.fp[k], dtype=np.float32)
            y = np.interp(x, xp, fp).astype(np.float32)
            y = np.where(x < xp[0], fp[0] + (x - xp[0]) * np.float32(self.slope_lo[k]), y)
            y = np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * np.float32(self.slope_hi[k]), y)
            if axis == 0:
                out[k] = y
            else:
                out[:, k] = y
        return out

    def _linear(self, k: int) -> tuple[float | None, float]:
        """``(gain, offset)`` when band ``k``'s map is one straight line, else ``(None, 0)``."""
        xp, fp = self.xp[k], self.fp[k]
        if len(xp) != 2 or xp[1] == xp[0]:
            return None, 0.0
        slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
        if not (math.isclose(slope, self.slope_lo[k], rel_tol=1e-9) and math.isclose(slope, self.slope_hi[k],
                                                                                      rel_tol=1e-9)):
            return None, 0.0
        return slope, fp[0] - slope * xp[0]

    def then_linear(self, gain: np.ndarray, offset: np.ndarray) -> BandMap:
        """This map followed by ``y -> gain * y + offset`` per band."""
        return BandMap(
            xp=self.xp,
            fp=tuple(tuple(float(g * f + o) for f in fp) for fp, g, o in zip(self.fp, gain, offset, strict=True)),
            slope_lo=tuple(float(s * g) for s, g in zip(self.slope_lo, gain, strict=True)),
            slope_hi=tuple(float(s * g) for s, g in zip(self.slope_hi, gain, strict=True)),
        )


def _linear_map(gain: np.ndarray, offset: np.ndarray) -> BandMap:
    """``y = gain * x + offset`` per band as a :class:`BandMap` (two breakpoints)."""
    return BandMap(
        xp=tuple((0.0, 1.0) for _ in gain),
        fp=tuple((float(o), float(g + o)) for g, o in zip(gain, offset, strict=True)),
        slope_lo=tuple(float(g) for g in gain), slope_hi=tuple(float(g) for g in gain),
    )


def _robust_gain(src: np.ndarray, dst: np.ndarray, levels: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band gain and offset taking the source's median and 2-98 % range onto the destination's."""
    i2, i50, i98 = levels.index(2.0), levels.index(50.0), levels.index(98.0)
    span_s = src[:, i98] - src[:, i2]
    span_d = dst[:, i98] - dst[:, i2]
    gain = np.where(span_s > 0, span_d / np.where(span_s > 0, span_s, 1.0), 1.0)
    offset = dst[:, i50] - gain * src[:, i50]
    return gain, offset


def band_map(src: np.ndarray, dst: np.ndarray, levels: list[float] | tuple[float, ...], method: str) -> BandMap:
    """The map taking a distribution with quantiles ``src`` onto one with quantiles ``dst``.

    Args:
        src: ``(bands, levels)`` quantiles of the scene (raw units).
        dst: ``(bands, levels)`` quantiles to reach (the card's, or date 1's).
        levels: Percentile levels (%) of both tables; must include 2, 50 and 98.
        method: ``standardize`` (linear, median and 2-98 % range) or ``percentile`` (piecewise linear through
            every level; tied source quantiles are merged).
    """
    lv = list(levels)
    gain, offset = _robust_gain(src, dst, lv)
    if method == "standardize":
        return _linear_map(gain, offset)
    if method != "percentile":
        raise ValueError(f"band_map: method must be 'standardize' or 'percentile', got {method!r}")
    xps, fps = [], []
    for k in range(src.shape[0]):
        xs, inverse = np.unique(src[k], return_inverse=True)
        ys = np.bincount(inverse, weights=dst[k]) / np.bincount(inverse)
        ys = np.maximum.accumulate(ys)  # monotone
        xps.append(tuple(float(x) for x in xs))
        fps.append(tuple(float(y) for y in ys))
    return BandMap(tuple(xps), tuple(fps), tuple(float(g) for g in gain), tuple(float(g) for g in gain))


@dataclass(frozen=True)
class Radiometry:
    """The per-scene normalisation of one pair: what was measured, which method, and the two maps.

    Picklable (sent with every block job). ``before_map``/``after_map`` are None for ``none``. The arrays the
    model sees are ``card.normalize(radiometry.apply_before(raw))`` (same for date 2); other steps that need
    the model's view of the pixels (e.g. the warning classifier's features) call :meth:`apply_before` /
    :meth:`apply_after` and :meth:`normalized`.
    """

    method: str
    before: DateStats
    after: DateStats
    before_map: BandMap | None
    after_map: BandMap | None
    card_dtype: str | None = None
    reason: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def apply_before(self, array: np.ndarray) -> np.ndarray:
        """Date-1 raw pixels in the card's units (float32)."""
        return self.before_map.apply(array) if self.before_map is not None else array.astype(np.float32, copy=False)

    def apply_after(self, array: np.ndarray) -> np.ndarray:
        """Date-2 raw pixels (on date 1's grid) in the card's units (float32)."""
        return self.after_map.apply(array) if self.after_map is not None else array.astype(np.float32, copy=False)

    @staticmethod
    def normalized(card: ModelCard, mapped: np.ndarray) -> np.ndarray:
        """The model's input: the card's ``normalization`` of pixels already in the card's units."""
        return card.normalize(mapped)

    def lines(self) -> list[str]:
        """One line per date for people: ``after: 8-bit, scaled by percentile matching to the card``."""
        words = _METHOD_WORDS.get(self.method, self.method)
        out = []
        for name, st in (("before", self.before), ("after", self.after)):
            kind = describe_dtype(st.dtype)
            extra = ""
            if self.card_dtype is not None and describe_dtype(self.card_dtype) != kind:
                extra = f" (the card was trained on {describe_dtype(self.card_dtype)})"
            nod = f", {st.nodata_share:.0%} nodata" if st.nodata_share >= 0.005 else ""
            out.append(f"{name}: {kind}{nod}, {words}{extra}")
        return out

    def summary(self) -> str:
        """The :meth:`lines` joined by ``; `` plus the reason of the choice."""
        text = "; ".join(self.lines())
        return f"{text} [{self.reason}]" if self.reason else text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (report.json, job logs)."""
        return {"method": self.method, "reason": self.reason, "before": self.before.as_dict(),
                "after": self.after.as_dict(), "notes": list(self.notes)}


def _fit_note(st: DateStats, card: ModelCard, label: str) -> str | None:
    """A note when a date's medians lie far (x3) from the card's (only said when not rescaled)."""
    if card.input is None:
        return None
    med = st.value(50.0)
    ref = card.input.value(50.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref > 0, med / ref, np.nan)
    far = [k for k, r in enumerate(ratio) if np.isfinite(r) and (r > 3 or r < 1 / 3)]
    if not far:
        return None
    k = far[0]
    return (f"{label} ({st.source}): band {st.bands[k]} median {med[k]:g} vs the card's {ref[k]:g} "
            f"(x{ratio[k]:.2g}) and not rescaled: use a radiometry other than 'none'")


def plan_radiometry(
    before: DateStats, after: DateStats, card: ModelCard | None, method: str | None = None
) -> Radiometry:
    """Check both dates and build the scene's maps.

    Args:
        before, after: :func:`measure_date` of the two dates.
        card: The checkpoint's card (None: the spectral detector, checks only).
        method: One of :data:`METHODS`, or None / ``"card"`` for the card's default (``none`` for a card
            without an input contract, i.e. an older checkpoint).

    Raises:
        InputRangeError: A date is (almost) all nodata or has a constant band.
        ConfigError: Unknown method, or one that needs the card's statistics on a card without them.
    """
    from cspon_rs.errors import ConfigError

    check_date(before)
    check_date(after)
    contract = card.input if card is not None else None
    if method in (None, "card"):
        chosen = contract.radiometry if contract is not None else "none"
        reason = ("card default, chosen on validation" if contract is not None
                  else "the card has no input statistics (older checkpoint)" if card is not None else "")
    else:
        chosen, reason = str(method), "set by the user"
    if chosen not in METHODS:
        raise ConfigError(f"radiometry must be one of {', '.join(METHODS)} or 'card', got {chosen!r}")
    if chosen != "none" and contract is None:
        raise ConfigError(
            f"radiometry {chosen!r} needs the card's input statistics, which "
            f"{card.detector_id if card is not None else 'the spectral detector'} does not have; use 'none' "
            "(or add them with models/card_stats.py)"
        )
    bmap = amap = None
    notes: list[str] = []
    if contract is not None and chosen != "none":
        levels = list(contract.quantile_levels)
        target = contract.quantiles()
        src_b, src_a = _on_levels(before, levels), _on_levels(after, levels)
        if chosen == "gain":
            i98 = levels.index(98.0)
            src = (src_b[:, i98] + src_a[:, i98]) / 2.0
            ratios = [t / v for t, v in zip(target[:, i98], src, strict=True) if v > 0]
            g = float(np.median(ratios)) if ratios else 1.0
            bmap = amap = _linear_map(np.full(len(src), g), np.zeros(len(src)))
        elif chosen in ("standardize", "percentile"):
            bmap = band_map(src_b, target, levels, chosen)
            amap = band_map(src_a, target, levels, chosen)
        else:  # relative: date 2 -> date 1 by percentiles, then date 1's standardisation for both
            gain, offset = _robust_gain(src_b, target, levels)
            bmap = _linear_map(gain, offset)
            amap = band_map(src_a, src_b, levels, "percentile").then_linear(gain, offset)
    elif card is not None:
        for st, label in ((before, "before"), (after, "after")):
            note = _fit_note(st, card, label)
            if note:
                notes.append(note)
    return Radiometry(
        method=chosen, before=before, after=after, before_map=bmap, after_map=amap,
        card_dtype=contract.dtype if contract is not None else None, reason=reason, notes=tuple(notes),
    )


def _on_levels(st: DateStats, levels: list[float]) -> np.ndarray:
    """A date's quantile table on ``levels`` (interpolated between its own levels if they differ)."""
    if list(st.levels) == levels:
        return st.table()
    table = st.table()
    return np.asarray([np.interp(levels, st.levels, row) for row in table])
