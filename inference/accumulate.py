"""Client side of one-pass tiling: completing block borders from the neighbours' spill.

Every window of the global grid is owned by one block (:func:`~cspon_rs.inference.windows.plan_owned_blocks`),
so a block's windows reach a little (about half an overlap) into the cores of its neighbours. A block
result carries the weighted sums over everything its windows cover. The *interior* of a core -- pixels no
neighbour's window reaches -- is final as soon as the block's own result arrives and is written at once;
the *ring* along its borders (a few tens of pixels wide) waits until every neighbour whose windows reach it
is done, then the contributions are added in block order (so the result does not depend on which worker
finished first) and written.

Memory on the client: one result at a time plus the pending rings, ``~ 4 x block edge x spill`` pixels per
open block -- independent of the scene size for a given scene width, and a small fraction of the blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from cspon_rs.inference.blocks import OwnedResult
from cspon_rs.inference.windows import OwnedBlock, PixelWindow, intersect

__all__ = ["BlendAccumulator", "FinishedPiece"]


@dataclass(frozen=True)
class FinishedPiece:
    """A rectangle of final blended probability.

    Attributes:
        window: Rectangle in scene pixels.
        prob: ``(h, w)`` float32 probability (0 where no window covered a valid pixel).
        valid: ``(h, w)`` bool, valid in both dates.
    """

    window: PixelWindow
    prob: np.ndarray
    valid: np.ndarray


@dataclass
class _Ring:
    """Pending border strips of one core and the contributions received so far."""

    rects: list[PixelWindow]
    waiting: set[int]
    pieces: list[list[tuple[int, PixelWindow, np.ndarray, np.ndarray]]] = field(default_factory=list)
    valid: list[np.ndarray | None] = field(default_factory=list)


def _ring_rects(core: PixelWindow, top: int, bottom: int, left: int, right: int) -> tuple[list[PixelWindow],
                                                                                         PixelWindow | None]:
    """Split a core into up to four border strips (margins in px) and the interior (None when empty)."""
    r0, r1, c0, c1 = core.row_off, core.row_end, core.col_off, core.col_end
    rt = min(r1, r0 + top)
    rb = max(rt, r1 - bottom)
    cl = min(c1, c0 + left)
    cr = max(cl, c1 - right)
    rects = [
        PixelWindow(r0, c0, rt - r0, c1 - c0),  # top, full width
        PixelWindow(rb, c0, r1 - rb, c1 - c0),  # bottom, full width
        PixelWindow(rt, c0, rb - rt, cl - c0),  # left, between top and bottom
        PixelWindow(rt, cr, rb - rt, c1 - cr),  # right
    ]
    inner = PixelWindow(rt, cl, rb - rt, cr - cl)
    return [r for r in rects if r.size > 0], (inner if inner.size > 0 else None)


def _slice(outer: PixelWindow, inner: PixelWindow) -> tuple[slice, slice]:
    """Index of ``inner`` inside an array covering ``outer``."""
    r, c = inner.row_off - outer.row_off, inner.col_off - outer.col_off
    return slice(r, r + inner.height), slice(c, c + inner.width)


class BlendAccumulator:
    """Turns :class:`~cspon_rs.inference.blocks.OwnedResult` s (any order) into final probability rectangles.

    Args:
        blocks: Every block of the plan (:func:`~cspon_rs.inference.windows.plan_owned_blocks`).
        active: Indices of the blocks that will run (e.g. those touching the AOI); the others contribute
            nothing and their cores are never produced.
    """

    def __init__(self, blocks: list[OwnedBlock], active: Iterable[int]) -> None:
        self.blocks = {b.index: b for b in blocks}
        self.active = set(active)
        by_pos = {b.grid_pos: b for b in blocks}
        self._reaches: dict[int, list[int]] = {i: [] for i in self.active}  # block -> cores its windows reach
        self._rings: dict[int, _Ring] = {}
        self._inner: dict[int, PixelWindow | None] = {}
        for i in sorted(self.active):
            b = self.blocks[i]
            top = bottom = left = right = 0
            waiting = set()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    n = by_pos.get((b.grid_pos[0] + dr, b.grid_pos[1] + dc))
                    if n is None or n.index == i or n.index not in self.active:
                        continue
                    cut = intersect(n.region, b.core)
                    if cut is None:
                        continue
                    waiting.add(n.index)
                    self._reaches[n.index].append(i)
                    if dr < 0:
                        top = max(top, cut.row_end - b.core.row_off)
                    if dr > 0:
                        bottom = max(bottom, b.core.row_end - cut.row_off)
                    if dc < 0:
                        left = max(left, cut.col_end - b.core.col_off)
                    if dc > 0:
                        right = max(right, b.core.col_end - cut.col_off)
            rects, inner = _ring_rects(b.core, top, bottom, left, right)
            self._inner[i] = inner
            if rects:
                ring = _Ring(rects, waiting | {i})
                ring.pieces = [[] for _ in rects]
                ring.valid = [None for _ in rects]
                self._rings[i] = ring

    @property
    def pending(self) -> int:
        """Cores whose border strips still wait for a neighbour."""
        return len(self._rings)

    def add(self, result: OwnedResult) -> Iterator[FinishedPiece]:
        """Take one block's sums; yield every rectangle that became final."""
        i = result.index
        region = result.region
        own = self.blocks[i]
        inner = self._inner.get(i)
        if inner is not None:
            sl = _slice(region, inner)
            yield FinishedPiece(inner, _divide(result.acc[sl], result.wsum[sl]), result.valid[sl].copy())
        for target in [i, *self._reaches.get(i, [])]:
            ring = self._rings.get(target)
            if ring is None:
                continue
            for k, rect in enumerate(ring.rects):
                cut = intersect(region, rect)
                if cut is None:
                    continue
                sl = _slice(region, cut)
                ring.pieces[k].append((i, cut, result.acc[sl].copy(), result.wsum[sl].copy()))
                if target == i:
                    ring.valid[k] = result.valid[_slice(region, rect)].copy()
            ring.waiting.discard(i)
            if not ring.waiting:
                del self._rings[target]
                yield from self._finish(ring)
        del own

    @staticmethod
    def _finish(ring: _Ring) -> Iterator[FinishedPiece]:
        for rect, pieces, valid in zip(ring.rects, ring.pieces, ring.valid, strict=True):
            acc = np.zeros((rect.height, rect.width), dtype=np.float32)
            wsum = np.zeros_like(acc)
            for _, cut, a, w in sorted(pieces, key=lambda p: p[0]):  # fixed order: same sums on any cluster
                sl = _slice(rect, cut)
                acc[sl] += a
                wsum[sl] += w
            yield FinishedPiece(rect, _divide(acc, wsum), valid if valid is not None else np.zeros(acc.shape, bool))


def _divide(acc: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
    return out
