"""Training crops read from disk on demand (``data.stream: true``): memory flat in the scene size.

A :class:`StreamPair` keeps only file names and a few numbers. Opening it makes one pass over the scene in
tiles (:data:`TILE` px a side) and keeps the per-band sums for the normalisation statistics, the
valid pixel count and a bounded, uniformly drawn sample of changed-pixel positions (for crops centred on
change). Every training crop is then a rasterio window read of both dates and the label
(:func:`cspon_rs.training.datasets.load_geotiff_pair` with ``window``): a 20 000 x 20 000 px scene costs a tile
and a crop, not 20 000² x bands x 4 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cspon_rs.training.config import PairSpec

__all__ = ["MAX_POSITIVES", "TILE", "StreamPair", "open_stream_pair"]

#: Edge (px) of the tiles read one at a time by the opening pass.
TILE = 512
#: Most changed-pixel positions kept per pair (a uniform sample of all of them).
MAX_POSITIVES = 20_000


@dataclass
class StreamPair:
    """A GeoTIFF pair read window by window (see the module docstring).

    Attributes:
        id: Pair id.
        spec: Its files (``window`` in it: only that block of the scene is used).
        root: Base folder of relative paths.
        read_kw: Keyword arguments of ``load_geotiff_pair`` (bands, band indexes, label decoding).
        shape: ``(H, W)`` of the (windowed) scene, pixels.
        n_bands: Bands per date.
        bands: Band names.
        positives: ``(k, 2)`` int array of (row, col) of changed pixels (a uniform sample, at most
            :data:`MAX_POSITIVES`).
        band_sum, band_sq, n_valid: Sums of valid pixel values per band over both dates (normalisation).
    """

    id: str
    spec: PairSpec
    root: Path | None
    read_kw: dict[str, Any]
    shape: tuple[int, int]
    n_bands: int
    bands: list[str]
    positives: np.ndarray
    band_sum: np.ndarray = field(repr=False)
    band_sq: np.ndarray = field(repr=False)
    n_valid: int = 0
    source: str = ""

    @property
    def area(self) -> int:
        """Pixels of the scene (pairs are drawn in proportion to it)."""
        return self.shape[0] * self.shape[1]

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, ...]:
        """``(before, after, label, valid)`` of a block given in this pair's pixel coordinates (clipped)."""
        from cspon_rs.training.datasets import load_geotiff_pair

        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.shape[0]), min(col + width, self.shape[1])
        off_c, off_r = (self.spec.window[0], self.spec.window[1]) if self.spec.window else (0, 0)
        spec = self.spec.model_copy(update={"window": (off_c + c0, off_r + r0, c1 - c0, r1 - r0)})
        pair = load_geotiff_pair(spec, self.root, **self.read_kw)
        return pair.before, pair.after, pair.label, pair.valid

    def crop(
        self, rng: np.random.Generator, c: int, want_pos: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A ``c`` x ``c`` crop (zero-padded and invalid outside the scene), around a changed pixel when asked."""
        h, w = self.shape
        if want_pos and len(self.positives):
            y, x = (int(v) for v in self.positives[int(rng.integers(len(self.positives)))])
            y0, x0 = y - int(rng.integers(c)), x - int(rng.integers(c))
        else:
            y0, x0 = int(rng.integers(max(h - c, 0) + 1)), int(rng.integers(max(w - c, 0) + 1))
        y0, x0 = min(max(y0, 0), max(h - c, 0)), min(max(x0, 0), max(w - c, 0))
        a_, b_, lab_, val_ = self.read(y0, x0, c, c)
        hh, ww = lab_.shape
        a = np.zeros((self.n_bands, c, c), dtype=np.float32)
        b = np.zeros_like(a)
        lab = np.zeros((c, c), dtype=np.uint8)
        val = np.zeros((c, c), dtype=bool)
        a[:, :hh, :ww], b[:, :hh, :ww], lab[:hh, :ww], val[:hh, :ww] = a_, b_, lab_, val_
        return a, b, lab, val


def open_stream_pair(
    spec: PairSpec, root: str | Path | None, *, seed: int = 0, **read_kw: Any
) -> StreamPair:
    """One pass over a pair, tile by tile: normalisation sums, valid count and a sample of changed pixels.

    Args:
        spec: The pair's files (and optional window).
        root: Base folder of relative paths.
        seed: Seed of the positive-pixel sample.
        read_kw: ``bands``, ``band_indexes``, ``label_threshold``, ``label_map``, ``ignore_value``.
    """
    from cspon_rs.geo.raster import open_raster
    from cspon_rs.training.datasets import _resolve, load_geotiff_pair

    base = Path(root) if root is not None else None
    with open_raster(_resolve(base, spec.before)) as src:
        full_h, full_w = src.height, src.width
    col0, row0, width, height = spec.window if spec.window is not None else (0, 0, full_w, full_h)
    rng = np.random.default_rng(seed)
    positives = np.zeros((0, 2), np.int32)
    keys = np.zeros(0)
    band_sum = band_sq = None
    n_valid, bands, n_bands, source = 0, [], 0, ""
    tiles = [(r, c) for r in range(0, height, TILE) for c in range(0, width, TILE)]
    for r, c in tiles:
        win = (col0 + c, row0 + r, min(TILE, width - c), min(TILE, height - r))
        tile = load_geotiff_pair(spec.model_copy(update={"window": win}), root, **read_kw)
        if band_sum is None:
            n_bands, bands, source = tile.before.shape[0], tile.bands, tile.source
            band_sum, band_sq = np.zeros(n_bands), np.zeros(n_bands)
        for img in (tile.before, tile.after):
            px = img[:, tile.valid].astype(np.float64)
            band_sum += px.sum(axis=1)
            band_sq += (px * px).sum(axis=1)
        n_valid += 2 * int(tile.valid.sum())
        ys, xs = np.nonzero((tile.label > 0) & tile.valid)
        if len(ys):  # bottom-k sampling: the MAX_POSITIVES smallest random keys are a uniform sample of all
            positives = np.concatenate([positives, np.stack([ys + r, xs + c], axis=1).astype(np.int32)])
            keys = np.concatenate([keys, rng.random(len(ys))])
            if len(keys) > MAX_POSITIVES:
                best = np.argpartition(keys, MAX_POSITIVES)[:MAX_POSITIVES]
                positives, keys = positives[best], keys[best]
    assert band_sum is not None and band_sq is not None
    return StreamPair(
        id=spec.id,
        spec=spec,
        root=base,
        read_kw=dict(read_kw),
        shape=(height, width),
        n_bands=n_bands,
        bands=list(bands),
        positives=positives,
        band_sum=band_sum,
        band_sq=band_sq,
        n_valid=n_valid,
        source=source,
    )
