"""One unit of distributed work: predict a core block of the scene from the files.

A :class:`BlockJob` holds only paths, pixel rectangles and a :class:`DetectorSpec` -- a few hundred
bytes -- so it can be sent to any Dask worker. Two kinds:

* :class:`OwnedJob` / :func:`predict_owned` (what :func:`~cspon_rs.inference.detect.detect_pair` runs): the
  block *owns* whole windows of the global grid (each window belongs to exactly one block), reads the
  pixels those windows cover and returns their weighted sums; the client adds the neighbours' spill at
  block borders (:mod:`cspon_rs.inference.accumulate`). Every window is predicted once.
* :class:`BlockJob` / :func:`predict_block` (reference): reads the core plus a halo, predicts every window
  touching the core (windows at block borders run in both blocks) and returns the blended core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.errors import RasterioIOError

from cspon_rs.errors import CorruptFileError
from cspon_rs.geo.raster import aligned_pair
from cspon_rs.inference.gdal_env import bounded_gdal_cache
from cspon_rs.inference.predictors import DetectorSpec, batch_windows, get_predictor, resolve_device
from cspon_rs.inference.windows import BlendKind, OwnedBlock, PixelWindow, tiles_for_block, window_weights

__all__ = [
    "BlockJob",
    "BlockResult",
    "OwnedJob",
    "OwnedResult",
    "PairPixels",
    "predict_block",
    "predict_owned",
    "predict_owned_pixels",
    "read_owned",
    "read_pair_window",
]


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to predict one block (paths, not arrays).

    Attributes:
        index: Block number (row-major), used for keys and ordering.
        before: Date-1 raster path (reference grid).
        after: Date-2 raster path (warped onto date 1's grid when grids differ).
        block: Core block in date-1 pixels.
        height: Scene height in pixels.
        width: Scene width in pixels.
        tile_size: Model window edge, pixels (multiple of 32).
        overlap: Overlap between neighbouring windows, pixels.
        blend: Window weighting.
        detector: The detector.
    """

    index: int
    before: str
    after: str
    block: PixelWindow
    height: int
    width: int
    tile_size: int
    overlap: int
    blend: BlendKind
    detector: DetectorSpec


@dataclass
class BlockResult:
    """Blended core of one block.

    Attributes:
        index: Block number.
        block: Core block in date-1 pixels.
        prob: ``(h, w)`` float32 change probability (0 where ``valid`` is False).
        valid: ``(h, w)`` bool, pixel is valid (not nodata) in both dates.
        n_windows: Model windows predicted for this block (windows with no valid pixel are skipped).
        read_s: Seconds spent reading (and warping) pixels.
        model_s: Seconds spent in the detector.
    """

    index: int
    block: PixelWindow
    prob: np.ndarray
    valid: np.ndarray
    n_windows: int
    read_s: float
    model_s: float


def read_pair_window(before: str, after: str, window: PixelWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one window of both dates on date 1's grid.

    Returns:
        ``(before, after, valid)``: two ``(C, h, w)`` float32 arrays in raw units and the ``(h, w)`` bool
        mask of pixels that are valid (GDAL dataset mask: not nodata, inside date 2's footprint) in both.
    """
    win = window.to_rasterio()
    with aligned_pair(before, after) as (src_a, src_b):
        try:
            a = src_a.read(window=win, out_dtype="float32")
            valid = src_a.dataset_mask(window=win) > 0
        except RasterioIOError as exc:
            raise CorruptFileError(f"{before}: pixels unreadable in {window} ({exc})") from exc
        try:
            b = src_b.read(window=win, out_dtype="float32")
            valid &= src_b.dataset_mask(window=win) > 0
        except RasterioIOError as exc:
            raise CorruptFileError(f"{after}: pixels unreadable in {window} ({exc})") from exc
    return a, b, valid


@bounded_gdal_cache
def predict_block(job: BlockJob) -> BlockResult:
    """Predict one block: read core + halo, run every window touching the core, blend, return the core.

    Windows whose pixels are all invalid are not run. Pixels of a window that lie outside the scene
    (scenes smaller than one window) are zero-padded.
    """
    t0 = time.perf_counter()
    origins, region = tiles_for_block(job.block, job.height, job.width, job.tile_size, job.overlap)
    a, b, valid = read_pair_window(job.before, job.after, region)
    read_s = time.perf_counter() - t0

    ts = job.tile_size
    n_bands = a.shape[0]
    weights = window_weights(ts, job.blend)
    core = job.block
    acc = np.zeros((core.height, core.width), dtype=np.float32)
    wsum = np.zeros((core.height, core.width), dtype=np.float32)

    placed = []
    for r, c in origins:
        rr, cc = r - region.row_off, c - region.col_off
        v = valid[rr : rr + ts, cc : cc + ts]
        if v.any():
            placed.append((r, c, v.shape[0], v.shape[1]))
    # Windows go through the detector in batches, so memory holds the block + halo and one batch.
    step = max(1, job.detector.batch_size)
    model_s = 0.0
    predictor = get_predictor(job.detector) if placed else None
    for start in range(0, len(placed), step):
        chunk = placed[start : start + step]
        batch_a = np.zeros((len(chunk), n_bands, ts, ts), dtype=np.float32)
        batch_b = np.zeros_like(batch_a)
        batch_v = np.zeros((len(chunk), ts, ts), dtype=bool)
        for i, (r, c, h, w) in enumerate(chunk):
            rr, cc = r - region.row_off, c - region.col_off
            batch_a[i, :, :h, :w] = a[:, rr : rr + h, cc : cc + w]
            batch_b[i, :, :h, :w] = b[:, rr : rr + h, cc : cc + w]
            batch_v[i, :h, :w] = valid[rr : rr + h, cc : cc + w]
        t1 = time.perf_counter()
        probs = predictor(batch_a, batch_b, batch_v)  # type: ignore[misc]
        model_s += time.perf_counter() - t1
        for (r, c, h, w), p in zip(chunk, probs, strict=True):
            # Intersection of this window with the core, in core and window coordinates.
            r0, r1 = max(r, core.row_off), min(r + h, core.row_end)
            c0, c1 = max(c, core.col_off), min(c + w, core.col_end)
            if r0 >= r1 or c0 >= c1:
                continue
            wr = slice(r0 - r, r1 - r)
            wc = slice(c0 - c, c1 - c)
            kr = slice(r0 - core.row_off, r1 - core.row_off)
            kc = slice(c0 - core.col_off, c1 - core.col_off)
            acc[kr, kc] += weights[wr, wc] * p[wr, wc]
            wsum[kr, kc] += weights[wr, wc]

    core_valid = valid[
        core.row_off - region.row_off : core.row_end - region.row_off,
        core.col_off - region.col_off : core.col_end - region.col_off,
    ]
    prob = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
    prob[~core_valid] = 0.0
    return BlockResult(
        index=job.index,
        block=core,
        prob=prob,
        valid=core_valid.copy(),
        n_windows=len(placed),
        read_s=read_s,
        model_s=model_s,
    )


@dataclass(frozen=True)
class OwnedJob:
    """A block that owns its windows (:class:`~cspon_rs.inference.windows.OwnedBlock`): paths, not arrays.

    Attributes:
        block: The block (core, region read, windows owned).
        before: Date-1 raster path (reference grid).
        after: Date-2 raster path (warped onto date 1's grid when grids differ).
        tile_size: Model window edge, pixels.
        blend: Window weighting.
        detector: The detector.
        radiometry: The scene's :class:`~cspon_rs.inference.radiometry.Radiometry` (per-band maps into the
            card's units, applied right after reading); None reads raw values.
    """

    block: OwnedBlock
    before: str
    after: str
    tile_size: int
    blend: BlendKind
    detector: DetectorSpec
    radiometry: Any = None

    @property
    def index(self) -> int:
        """Block number (row-major)."""
        return int(self.block.index)


@dataclass
class OwnedResult:
    """Weighted sums of one block's windows over the pixels they cover (its region).

    Attributes:
        index: Block number.
        region: Pixels covered, in date-1 pixels.
        acc: ``(h, w)`` float32, sum of weight x probability over the block's windows.
        wsum: ``(h, w)`` float32, sum of the weights.
        valid: ``(h, w)`` bool, pixel valid in both dates.
        n_windows: Windows predicted (windows without a valid pixel are skipped).
        read_s: Seconds spent reading (and warping) pixels.
        model_s: Seconds spent in the detector.
    """

    index: int
    region: PixelWindow
    acc: np.ndarray
    wsum: np.ndarray
    valid: np.ndarray
    n_windows: int
    read_s: float
    model_s: float


@dataclass
class PairPixels:
    """Pixels of a block's region read from both dates (what :func:`read_owned` returns)."""

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    read_s: float


@bounded_gdal_cache
def read_owned(job: OwnedJob) -> PairPixels:
    """Read a block's region from both dates (date 2 warped onto date 1's grid when needed)."""
    t0 = time.perf_counter()
    a, b, valid = read_pair_window(job.before, job.after, job.block.region)
    if job.radiometry is not None:
        a, b = job.radiometry.apply_before(a), job.radiometry.apply_after(b)
    return PairPixels(a, b, valid, time.perf_counter() - t0)


def predict_owned_pixels(job: OwnedJob, pixels: PairPixels) -> OwnedResult:
    """Predict the windows a block owns on pixels already read, in batches, and return their weighted sums."""
    region, ts = job.block.region, job.tile_size
    a, b, valid = pixels.before, pixels.after, pixels.valid
    weights = window_weights(ts, job.blend)
    acc = np.zeros((region.height, region.width), dtype=np.float32)
    wsum = np.zeros_like(acc)
    placed = []
    for r, c in job.block.origins:
        rr, cc = r - region.row_off, c - region.col_off
        v = valid[rr : rr + ts, cc : cc + ts]
        if v.any():
            placed.append((rr, cc, v.shape[0], v.shape[1]))
    model_s = 0.0
    if placed:
        predictor = get_predictor(job.detector)
        spec = job.detector
        device = "cpu" if spec.is_spectral or spec.backend == "onnx" or spec.device == "auto" else spec.device
        if spec.device == "auto" and not spec.is_spectral and spec.backend == "torch":
            device = resolve_device("auto")
        step = batch_windows(spec, ts, device)
        for start in range(0, len(placed), step):
            chunk = placed[start : start + step]
            batch_a = np.zeros((len(chunk), a.shape[0], ts, ts), dtype=np.float32)
            batch_b = np.zeros_like(batch_a)
            batch_v = np.zeros((len(chunk), ts, ts), dtype=bool)
            for i, (rr, cc, h, w) in enumerate(chunk):
                batch_a[i, :, :h, :w] = a[:, rr : rr + h, cc : cc + w]
                batch_b[i, :, :h, :w] = b[:, rr : rr + h, cc : cc + w]
                batch_v[i, :h, :w] = valid[rr : rr + h, cc : cc + w]
            t1 = time.perf_counter()
            probs = predictor(batch_a, batch_b, batch_v)
            model_s += time.perf_counter() - t1
            for (rr, cc, h, w), p in zip(chunk, probs, strict=True):
                wt = weights[:h, :w]
                acc[rr : rr + h, cc : cc + w] += wt * p[:h, :w]
                wsum[rr : rr + h, cc : cc + w] += wt
    return OwnedResult(job.index, region, acc, wsum, valid, len(placed), pixels.read_s, model_s)


@bounded_gdal_cache
def predict_owned(job: OwnedJob) -> OwnedResult:
    """Read a block's region and predict the windows it owns (one Dask task)."""
    return predict_owned_pixels(job, read_owned(job))
