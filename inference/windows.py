"""Sliding-window grid, blending weights and processing blocks.

The whole scene is covered by one *global* grid of model windows (``tile_size`` square, ``stride =
tile_size - overlap`` apart, the last row/column of windows pushed back so it ends on the scene edge). Each
pixel's probability is the weighted mean of the predictions of every window covering it, the weight being
a smooth bump (cosine or Gaussian) that is close to zero at a window's edge, so seams do not show.

Work is split into *blocks* (large core rectangles, e.g. 1024 x 1024 px). A block task reads the union of
the windows that touch its core (the core plus a halo), predicts them and returns the blended core. Because
the window grid is global, the blended value of a pixel is the same whatever the block size or worker --
single-process and Dask runs agree.

All sizes and offsets are in pixels of the *before* scene's grid.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from cspon_rs.errors import ConfigError

__all__ = [
    "AxisChunk",
    "BlendKind",
    "OwnedBlock",
    "PixelWindow",
    "axis_chunks",
    "intersect",
    "plan_blocks",
    "plan_owned_blocks",
    "tile_origins",
    "tiles_for_block",
    "validate_tiling",
    "window_starts",
    "window_weights",
]

BlendKind = Literal["cosine", "gaussian", "uniform"]


@dataclass(frozen=True, order=True)
class PixelWindow:
    """A rectangle of pixels: rows ``[row_off, row_off + height)``, columns ``[col_off, col_off + width)``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        """First row after the window."""
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        """First column after the window."""
        return self.col_off + self.width

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width

    def to_rasterio(self) -> object:
        """The same rectangle as a :class:`rasterio.windows.Window`."""
        from rasterio.windows import Window

        return Window(self.col_off, self.row_off, self.width, self.height)  # type: ignore[no-untyped-call]


def validate_tiling(tile_size: int, overlap: int) -> None:
    """Raise :class:`ConfigError` unless ``tile_size`` is a positive multiple of 32 and ``0 <= overlap < tile_size``."""
    if tile_size <= 0 or tile_size % 32:
        raise ConfigError(f"tile_size must be a positive multiple of 32 (model stride), got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ConfigError(f"overlap must be >= 0 and < tile_size ({tile_size}), got {overlap}")


def window_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of the windows covering ``[0, length)`` along one axis.

    Windows are ``stride = tile_size - overlap`` apart; the last one is moved back to end exactly at
    ``length`` so no window reaches past the scene (unless the scene is shorter than one window, in which
    case the single window starts at 0 and is padded).
    """
    validate_tiling(tile_size, overlap)
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return sorted(set(starts))


def tile_origins(height: int, width: int, tile_size: int, overlap: int) -> list[tuple[int, int]]:
    """(row, col) upper-left corners of every model window of a ``height`` x ``width`` scene."""
    rows = window_starts(height, tile_size, overlap)
    cols = window_starts(width, tile_size, overlap)
    return [(r, c) for r in rows for c in cols]


@lru_cache(maxsize=8)
def _weights_cached(tile_size: int, kind: BlendKind) -> np.ndarray:
    i = np.arange(tile_size, dtype=np.float64) + 0.5
    if kind == "cosine":
        w1 = np.sin(math.pi * i / tile_size) ** 2
    elif kind == "gaussian":
        sigma = tile_size / 8.0
        w1 = np.exp(-((i - tile_size / 2.0) ** 2) / (2.0 * sigma * sigma))
    elif kind == "uniform":
        w1 = np.ones(tile_size)
    else:
        raise ConfigError(f"blend must be 'cosine', 'gaussian' or 'uniform', got {kind!r}")
    w1 = np.maximum(w1, 1e-6)
    weights = np.outer(w1, w1).astype(np.float32)
    weights.setflags(write=False)
    return weights


def window_weights(tile_size: int, kind: BlendKind = "cosine") -> np.ndarray:
    """Blending weights of one window, shape ``(tile_size, tile_size)``, float32, strictly positive.

    ``cosine`` is the separable Hann bump ``sin²(π(i + ½)/n)``, ``gaussian`` a separable Gaussian with
    σ = n/8 (as in nnU-Net), ``uniform`` plain averaging. Weights never reach zero, so pixels covered by a
    single window (scene borders) still get that window's prediction after normalisation.
    """
    return _weights_cached(int(tile_size), kind)


def plan_blocks(height: int, width: int, block_size: int) -> list[PixelWindow]:
    """Split a scene into core blocks of at most ``block_size`` x ``block_size`` pixels, row-major."""
    if block_size <= 0:
        raise ConfigError(f"block_size must be > 0, got {block_size}")
    blocks = []
    for r in range(0, height, block_size):
        for c in range(0, width, block_size):
            blocks.append(PixelWindow(r, c, min(block_size, height - r), min(block_size, width - c)))
    return blocks


def tiles_for_block(
    block: PixelWindow, height: int, width: int, tile_size: int, overlap: int
) -> tuple[list[tuple[int, int]], PixelWindow]:
    """Model windows touching a block's core, and the region (core + halo) a task must read.

    Args:
        block: Core block.
        height: Scene height in pixels.
        width: Scene width in pixels.
        tile_size: Model window edge in pixels.
        overlap: Overlap of neighbouring windows in pixels.

    Returns:
        ``(origins, read_window)``: the (row, col) origins of the windows intersecting the core, in
        scene pixels, sorted, and the smallest rectangle inside the scene that holds all of them.
    """
    rows = [r for r in window_starts(height, tile_size, overlap) if r < block.row_end and r + tile_size > block.row_off]
    cols = [c for c in window_starts(width, tile_size, overlap) if c < block.col_end and c + tile_size > block.col_off]
    r0, c0 = rows[0], cols[0]
    r1 = min(rows[-1] + tile_size, height)
    c1 = min(cols[-1] + tile_size, width)
    return [(r, c) for r in rows for c in cols], PixelWindow(r0, c0, r1 - r0, c1 - c0)


@dataclass(frozen=True)
class AxisChunk:
    """One run of consecutive windows along an axis, and the pixels it owns.

    Attributes:
        starts: Window start offsets of the chunk (px).
        core: ``(start, end)`` of the pixels the chunk owns; chunk cores tile the axis without overlap.
        region: ``(start, end)`` of the pixels its windows cover (core plus a spill of about half an overlap
            into each neighbour).
    """

    starts: tuple[int, ...]
    core: tuple[int, int]
    region: tuple[int, int]


def axis_chunks(length: int, tile_size: int, overlap: int, block_size: int) -> list[AxisChunk]:
    """Group the windows along one axis into chunks of about ``block_size`` px; each window in exactly one.

    Chunk borders sit in the middle of the overlap of the last window of a chunk and the first of the next,
    so a chunk's windows reach at most about ``overlap / 2`` px into a neighbour's core (more only next to
    the last window, which is pushed back to end on the scene edge).
    """
    if block_size <= 0:
        raise ConfigError(f"block_size must be > 0, got {block_size}")
    starts = window_starts(length, tile_size, overlap)
    stride = tile_size - overlap
    per = max(1, round(block_size / stride))
    groups = [starts[i : i + per] for i in range(0, len(starts), per)]
    if len(groups) > 1 and len(groups[-1]) == 1 and per > 1 and (
        length - (groups[-2][-1] + tile_size + groups[-1][0]) // 2 < stride // 2
    ):
        # A lone pushed-back last window that would own a sliver: keep it with its neighbours.
        last = groups.pop()
        groups[-1] = groups[-1] + last
    borders = [0]
    for prev, nxt in itertools.pairwise(groups):
        borders.append((nxt[0] + prev[-1] + tile_size) // 2)
    borders.append(length)
    return [
        AxisChunk(tuple(g), (borders[i], borders[i + 1]), (g[0], min(g[-1] + tile_size, max(length, tile_size))))
        for i, g in enumerate(groups)
    ]


@dataclass(frozen=True)
class OwnedBlock:
    """A block of the scene that owns a set of windows (each window of the scene is owned by one block).

    Attributes:
        index: Row-major block number.
        grid_pos: ``(block row, block column)``.
        core: Pixels the block owns (cores tile the scene).
        region: Pixels its windows cover (what the task reads; core plus spill into neighbours).
        origins: ``(row, col)`` of the windows it owns, row-major.
    """

    index: int
    grid_pos: tuple[int, int]
    core: PixelWindow
    region: PixelWindow
    origins: tuple[tuple[int, int], ...]


def plan_owned_blocks(height: int, width: int, tile_size: int, overlap: int, block_size: int) -> list[OwnedBlock]:
    """Blocks of about ``block_size`` px, each owning whole windows of the global grid, row-major.

    Every window of :func:`tile_origins` belongs to exactly one block, so no window is predicted twice;
    the blended value of a pixel near a block border is completed from the neighbour's spill (see
    :mod:`cspon_rs.inference.accumulate`).
    """
    rows = axis_chunks(height, tile_size, overlap, block_size)
    cols = axis_chunks(width, tile_size, overlap, block_size)
    blocks: list[OwnedBlock] = []
    for i, rc in enumerate(rows):
        for j, cc in enumerate(cols):
            core = PixelWindow(rc.core[0], cc.core[0], rc.core[1] - rc.core[0], cc.core[1] - cc.core[0])
            r1, c1 = min(rc.region[1], height), min(cc.region[1], width)
            region = PixelWindow(rc.region[0], cc.region[0], r1 - rc.region[0], c1 - cc.region[0])
            origins = tuple((r, c) for r in rc.starts for c in cc.starts)
            blocks.append(OwnedBlock(len(blocks), (i, j), core, region, origins))
    return blocks


def intersect(a: PixelWindow, b: PixelWindow) -> PixelWindow | None:
    """Intersection of two rectangles, or None when they do not overlap."""
    r0, c0 = max(a.row_off, b.row_off), max(a.col_off, b.col_off)
    r1, c1 = min(a.row_end, b.row_end), min(a.col_end, b.col_end)
    if r0 >= r1 or c0 >= c1:
        return None
    return PixelWindow(r0, c0, r1 - r0, c1 - c0)
